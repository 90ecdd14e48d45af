//! The simulator's socket layer: a loopback listener that can be taken away and put back on the
//! same port (`set_offline`), and a registry of open connections so one can be cut without an
//! answer (`Fault::Drop`) and all of them can be cut when the network "drops".
//!
//! Why a registry of raw fds: hyper owns each connection's stream, so the only way to cut it from
//! a request handler is `shutdown(2)` on its socket. The fd stays registered exactly while the
//! stream is alive (`TrackedStream` forgets it in `Drop`, before the socket is closed, under the
//! same lock `cut` takes), so a cut can never hit an fd number the process has since reused.

use crate::mutex::lock;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Open connections by id.
#[derive(Default)]
pub(super) struct Connections {
    open: Mutex<HashMap<u64, RawFd>>,
    next_id: AtomicU64,
}

impl Connections {
    fn register(&self, fd: RawFd) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.open).insert(id, fd);
        id
    }

    fn forget(&self, id: u64) {
        lock(&self.open).remove(&id);
    }

    /// Shuts the connection's socket down both ways: the peer sees the connection close with no
    /// response. Returns false when the connection is already gone.
    pub(super) fn cut(&self, id: u64) -> bool {
        let open = lock(&self.open);
        match open.get(&id) {
            Some(&fd) => {
                // SAFETY: `fd` belongs to a live TcpStream (see the module comment); shutdown
                // does not close or free it, it only ends the TCP conversation.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                true
            }
            None => false,
        }
    }

    fn cut_all(&self) {
        let open = lock(&self.open);
        for &fd in open.values() {
            // SAFETY: as in `cut`.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

/// An accepted connection that stays in the registry while it lives.
pub(super) struct TrackedStream {
    id: u64,
    connections: Arc<Connections>,
    stream: TcpStream,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Runs before `stream` is dropped, i.e. before the fd is closed.
        self.connections.forget(self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What a handler learns about its connection (through `ConnectInfo`).
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnMeta {
    pub id: u64,
    #[allow(dead_code)] // read through Debug, in axum's connection trace logs
    pub peer: SocketAddr,
}

impl Connected<IncomingStream<'_, SlotListener>> for ConnMeta {
    fn connect_info(stream: IncomingStream<'_, SlotListener>) -> Self {
        *stream.remote_addr()
    }
}

/// The listening socket lives in a slot: emptying the slot closes the port at once, from any
/// thread, without waiting for the accept loop to notice.
type Slot = Arc<Mutex<Option<TcpListener>>>;

pub(super) struct SlotListener {
    slot: Slot,
    connections: Arc<Connections>,
    local: SocketAddr,
}

impl Listener for SlotListener {
    type Io = TrackedStream;
    type Addr = ConnMeta;

    async fn accept(&mut self) -> (TrackedStream, ConnMeta) {
        loop {
            let accepted = std::future::poll_fn(|cx| {
                let slot = lock(&self.slot);
                // An empty slot means offline: stay pending until the serve loop is told to stop.
                let Some(listener) = slot.as_ref() else {
                    return Poll::Pending;
                };
                match listener.poll_accept(cx) {
                    // Registered under the slot lock, so going offline cannot miss it.
                    Poll::Ready(Ok((stream, peer))) => {
                        let id = self.connections.register(stream.as_raw_fd());
                        Poll::Ready(Ok((stream, ConnMeta { id, peer })))
                    }
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match accepted {
                Ok((stream, meta)) => {
                    let tracked = TrackedStream {
                        id: meta.id,
                        connections: Arc::clone(&self.connections),
                        stream,
                    };
                    return (tracked, meta);
                }
                // Per-connection errors (reset before accept) are harmless; others (out of fds)
                // deserve a pause, as axum's own listener does.
                Err(error) if is_connection_error(&error) => {}
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<ConnMeta> {
        Ok(ConnMeta {
            id: 0,
            peer: self.local,
        })
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One listening period: the slot and the signal that ends its serve loop.
struct Online {
    slot: Slot,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// The HTTP server on a fixed loopback port that can go offline and come back.
pub(super) struct Server {
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    app: Router,
    connections: Arc<Connections>,
    online: Mutex<Option<Online>>,
}

impl Server {
    /// Binds 127.0.0.1:`port` (or a free port for 0) and starts serving `app` on the current
    /// runtime.
    pub(super) fn start(port: u16, app: Router, connections: Arc<Connections>) -> io::Result<Server> {
        let listener = bind_loopback(port)?;
        let server = Server {
            addr: listener.local_addr()?,
            runtime: tokio::runtime::Handle::current(),
            app,
            connections,
            online: Mutex::new(None),
        };
        let online = server.serve(listener)?;
        *lock(&server.online) = Some(online);
        Ok(server)
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Offline: the port refuses connections and every open one is cut. Online again: the same
    /// port listens anew. Synchronous, so it works from tests with or without a runtime.
    pub(super) fn set_offline(&self, offline: bool) -> io::Result<()> {
        let mut online = lock(&self.online);
        if offline {
            if let Some(Online { slot, stop }) = online.take() {
                drop(lock(&slot).take()); // closes the listening socket now
                self.connections.cut_all();
                let _ = stop.send(());
            }
        } else if online.is_none() {
            let listener = StdListener::bind(self.addr)?;
            *online = Some(self.serve(listener)?);
        }
        Ok(())
    }

    fn serve(&self, listener: StdListener) -> io::Result<Online> {
        listener.set_nonblocking(true)?;
        let listener = {
            let _runtime = self.runtime.enter();
            TcpListener::from_std(listener)?
        };
        let slot: Slot = Arc::new(Mutex::new(Some(listener)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = SlotListener {
            slot: Arc::clone(&slot),
            connections: Arc::clone(&self.connections),
            local: self.addr,
        };
        let service = self.app.clone().into_make_service_with_connect_info::<ConnMeta>();
        self.runtime.spawn(async move {
            // The sender going away (the Simulator dropped) stops the server too.
            let signal = async move {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, service)
                .with_graceful_shutdown(signal)
                .await;
        });
        Ok(Online { slot, stop })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.set_offline(true);
    }
}

/// A fixed port as asked; for "any port", one below Linux's ephemeral range (32768+) when
/// possible, so no outgoing connection can take it over while the simulator is offline.
fn bind_loopback(port: u16) -> io::Result<StdListener> {
    if port != 0 {
        return StdListener::bind(("127.0.0.1", port));
    }
    let mut rng = fastrand::Rng::new();
    for _ in 0..64 {
        if let Ok(listener) = StdListener::bind(("127.0.0.1", rng.u16(20_000..32_000))) {
            return Ok(listener);
        }
    }
    StdListener::bind(("127.0.0.1", 0))
}
