//! The serial port under an OSDP bus, as a LibOSDP channel: opened raw 8N1 and exclusive
//! (`tty`, so no second process can talk on the bus), reopened after it fails (a
//! USB adapter unplugged and plugged back), and watched: which address each command went to
//! and whether anything answered, so a reader that answers but refuses the key can be told
//! from one that is not there.
//!
//! OSDP is half duplex with the control panel as the only master (v2.2 §5.7): every reply
//! belongs to the command written just before it, so the command's address byte (the byte after
//! the start-of-message 0x53, itself after an optional 0xFF mark) names who answered.

use super::tty::Tty;
use crate::hw::monotonic_ns;
use libosdp::{Channel, ChannelError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a port that failed to open is tried again.
const REOPEN_MS: u64 = 1_000;
/// How long a write may wait for room in the UART's buffer (reads never wait). A command is at
/// most a few hundred bytes; at 9600 baud the kernel buffer drains 4 KB in about 4 s, so a full
/// buffer for this long means the port is wedged.
const WRITE_WAIT: Duration = Duration::from_millis(100);
const START_OF_MESSAGE: u8 = 0x53;
const MARK: u8 = 0xFF;
/// OSDP addresses are 7 bits; 0x7F is broadcast.
const ADDRESSES: usize = 128;

/// What was seen on the bus for one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressActivity {
    /// Commands to this address that got at least one byte back.
    pub exchanges: u64,
    /// When bytes last came back from it (monotonic ms).
    pub answered_at_ms: Option<u64>,
    /// When the first command since its last answer was written to it: the start of an
    /// unanswered stretch. Counted from a command, not from the last answer, so a port thread
    /// that was not scheduled for a while does not take its own pause for the reader's silence.
    pub unanswered_since_ms: Option<u64>,
}

/// Bus observations shared between the channel (driven inside LibOSDP) and the port thread.
#[derive(Debug)]
pub struct BusWatch {
    activity: [AddressActivity; ADDRESSES],
    /// Why the port is not usable now, if it is not.
    port_error: Option<String>,
}

impl BusWatch {
    pub fn new() -> Arc<Mutex<BusWatch>> {
        Arc::new(Mutex::new(BusWatch {
            activity: [AddressActivity::default(); ADDRESSES],
            port_error: Some("not opened yet".into()),
        }))
    }

    pub fn activity(&self, address: u8) -> AddressActivity {
        self.activity[usize::from(address & 0x7F)]
    }

    pub fn port_error(&self) -> Option<&str> {
        self.port_error.as_deref()
    }
}

/// The address a command packet is sent to: the byte after the start of message.
pub fn command_address(packet: &[u8]) -> Option<u8> {
    let start = match packet {
        [MARK, START_OF_MESSAGE, ..] => 1,
        [START_OF_MESSAGE, ..] => 0,
        _ => return None,
    };
    packet.get(start + 1).map(|address| address & 0x7F)
}

pub struct SerialChannel {
    /// LibOSDP's channel id: non-zero and unique per bus.
    id: i32,
    path: PathBuf,
    baud: u32,
    port: Option<Tty>,
    next_open_ms: u64,
    watch: Arc<Mutex<BusWatch>>,
    /// The address of the command in flight and whether it has been answered.
    addressed: Option<u8>,
    answered: bool,
}

impl SerialChannel {
    pub fn new(id: i32, path: PathBuf, baud: u32, watch: Arc<Mutex<BusWatch>>) -> SerialChannel {
        SerialChannel {
            id,
            path,
            baud,
            port: None,
            next_open_ms: 0,
            watch,
            addressed: None,
            answered: false,
        }
    }

    fn now_ms() -> u64 {
        monotonic_ns() / 1_000_000
    }

    /// The open port, opening it first if it is closed and a retry is due.
    fn port(&mut self) -> Option<&mut Tty> {
        if self.port.is_none() && Self::now_ms() >= self.next_open_ms {
            match Tty::open(&self.path, self.baud) {
                Ok(port) => {
                    tracing::info!(port = %self.path.display(), baud = self.baud, "OSDP serial port open");
                    self.port = Some(port);
                    self.set_error(None);
                }
                Err(error) => {
                    self.next_open_ms = Self::now_ms() + REOPEN_MS;
                    self.set_error(Some(format!("cannot open: {error}")));
                }
            }
        }
        self.port.as_mut()
    }

    /// Closes a port that failed; it is reopened on the next use after `REOPEN_MS`.
    fn fail(&mut self, what: &str, error: std::io::Error) {
        self.port = None;
        self.next_open_ms = Self::now_ms() + REOPEN_MS;
        self.set_error(Some(format!("{what} failed: {error}")));
    }

    fn set_error(&self, error: Option<String>) {
        let mut watch = crate::mutex::lock(&self.watch);
        if watch.port_error != error {
            if let Some(reason) = &error {
                tracing::warn!(port = %self.path.display(), %reason, "OSDP serial port not usable");
            }
            watch.port_error = error;
        }
    }

    fn record_answer(&mut self) {
        let Some(address) = self.addressed else {
            return;
        };
        let mut watch = crate::mutex::lock(&self.watch);
        let seen = &mut watch.activity[usize::from(address)];
        seen.answered_at_ms = Some(Self::now_ms());
        seen.unanswered_since_ms = None;
        if !self.answered {
            seen.exchanges += 1;
            self.answered = true;
        }
    }
}

impl Channel for SerialChannel {
    fn get_id(&self) -> i32 {
        self.id
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        let Some(port) = self.port() else {
            return Err(ChannelError::WouldBlock);
        };
        match port.read(buf) {
            Ok(0) => Err(ChannelError::WouldBlock),
            Ok(n) => {
                self.record_answer();
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Err(ChannelError::WouldBlock)
            }
            Err(e) => {
                self.fail("read", e);
                Err(ChannelError::WouldBlock)
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, ChannelError> {
        if let Some(address) = command_address(buf) {
            self.addressed = Some(address);
            self.answered = false;
            let mut watch = crate::mutex::lock(&self.watch);
            let seen = &mut watch.activity[usize::from(address)];
            seen.unanswered_since_ms.get_or_insert(Self::now_ms());
        }
        let Some(port) = self.port() else {
            return Err(ChannelError::TransportError);
        };
        match port.write(buf, WRITE_WAIT) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Err(ChannelError::WouldBlock)
            }
            Err(e) => {
                self.fail("write", e);
                Err(ChannelError::TransportError)
            }
        }
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        // LibOSDP flushes before retrying a command: drop half-received replies.
        if let Some(port) = self.port.as_mut() {
            port.discard_input();
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), ChannelError> {
        self.port = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_command_address_follows_the_start_of_message() {
        assert_eq!(command_address(&[0xFF, 0x53, 0x05, 0x08, 0x00]), Some(5));
        assert_eq!(command_address(&[0x53, 0x7F, 0x08]), Some(0x7F));
        assert_eq!(command_address(&[0x53, 0x85]), Some(5), "reply bit masked");
        assert_eq!(command_address(&[0x12, 0x53, 0x05]), None, "mid-packet write");
        assert_eq!(command_address(&[0xFF, 0x53]), None);
    }

    #[test]
    fn a_missing_port_is_an_error_and_is_retried_later() {
        let watch = BusWatch::new();
        let mut channel = SerialChannel::new(1, "/dev/does-not-exist".into(), 9600, watch.clone());
        assert_eq!(
            channel.write(&[0xFF, 0x53, 0x00]),
            Err(ChannelError::TransportError)
        );
        let error = watch.lock().unwrap().port_error().unwrap().to_string();
        assert!(error.contains("cannot open"), "{error}");
        assert!(
            channel.next_open_ms > SerialChannel::now_ms(),
            "retry is rate-limited"
        );
        assert_eq!(channel.read(&mut [0; 8]), Err(ChannelError::WouldBlock));
    }

    #[test]
    fn answers_are_counted_for_the_addressed_reader_over_a_pty() {
        let (master, slave) = crate::osdp::pty::open_pair().unwrap();
        let watch = BusWatch::new();
        let mut channel = SerialChannel::new(1, slave, 9600, watch.clone());
        assert_eq!(channel.write(&[0xFF, 0x53, 0x03, 0x08]), Ok(4));
        assert!(watch.lock().unwrap().port_error().is_none());
        let mut peer = std::fs::File::from(master);
        let mut sent = [0u8; 4];
        peer.read_exact(&mut sent).unwrap();
        assert_eq!(sent, [0xFF, 0x53, 0x03, 0x08], "raw mode: no translation");
        peer.write_all(&[0xFF, 0x53, 0x83]).unwrap();
        peer.write_all(&[0x00]).unwrap();
        let mut got = Vec::new();
        for _ in 0..200 {
            let mut buf = [0u8; 16];
            if let Ok(n) = channel.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, [0xFF, 0x53, 0x83, 0x00]);
        let seen = watch.lock().unwrap().activity(3);
        assert_eq!(seen.exchanges, 1, "one command, one exchange, however many reads");
        assert!(seen.answered_at_ms.is_some());
        assert_eq!(seen.unanswered_since_ms, None, "answered");
        assert_eq!(watch.lock().unwrap().activity(4), AddressActivity::default());
        // The other end goes away: the read fails, the port is closed and reported.
        drop(peer);
        let _ = channel.read(&mut [0u8; 16]);
        assert!(watch.lock().unwrap().port_error().is_some());
    }
}
