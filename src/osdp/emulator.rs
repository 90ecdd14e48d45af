//! An emulated OSDP reader for the demo and for trying the agent without hardware: LibOSDP in
//! the peripheral (PD) role on the master side of a pty pair, so the agent's real control panel
//! code runs against it on the slave side as if on a serial port.
//!
//! It behaves like a factory reader: it answers at its address, keeps the key it is given by
//! osdp_KEYSET (as a reader keeps it in flash, across `power_cycle`), and reports what the
//! control panel asks of its LED and buzzer.

use super::pty;
use crate::wiegand::Bits;
use libosdp::{
    Channel, ChannelError, OsdpCommand, OsdpCommandBuzzer, OsdpCommandLed, OsdpEvent, OsdpEventCardRead,
    OsdpEventKeyPress, OsdpFlag, PdCapEntity, PdCapability, PdId, PdInfoBuilder, PeripheralDevice,
};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the emulated reader was asked to do by the control panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Led(OsdpCommandLed),
    Buzzer(OsdpCommandBuzzer),
    /// A new key was installed (its value is not reported).
    KeySet,
}

enum Control {
    Card(Bits),
    Keys(Vec<u8>),
    /// Power off (`false`) or on (`true`).
    Power(bool),
    Stop,
}

pub struct EmulatedReader {
    control: Sender<Control>,
    seen: Receiver<Seen>,
    thread: Option<JoinHandle<()>>,
    port: PathBuf,
}

impl EmulatedReader {
    /// Starts a reader at `address`. `key`: the key it holds (`None`: factory state, in install
    /// mode, accepting SCBK-D once to receive its key).
    pub fn start(address: u8, key: Option<[u8; 16]>) -> io::Result<EmulatedReader> {
        let (master, port) = pty::open_pair()?;
        set_nonblocking(&master)?;
        let master = Arc::new(master);
        let (control_tx, control_rx) = mpsc::channel();
        let (seen_tx, seen_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("osdp-emulated-reader".into())
            .spawn(move || run(master, address, key, control_rx, seen_tx))?;
        Ok(EmulatedReader {
            control: control_tx,
            seen: seen_rx,
            thread: Some(thread),
            port,
        })
    }

    /// The serial port to configure for the agent (the pty's slave side).
    pub fn port(&self) -> &PathBuf {
        &self.port
    }

    /// A card held to the reader: its bits go to the control panel as an osdp_RAW card read.
    pub fn present_card(&self, bits: Bits) {
        let _ = self.control.send(Control::Card(bits));
    }

    /// Keys typed on the keypad (`0`-`9`, `*`, `#`), sent as one osdp_KEYPAD report.
    pub fn press_keys(&self, keys: &str) {
        let bytes = keys
            .bytes()
            .map(|b| match b {
                b'*' => 0x7F,
                b'#' => 0x0D,
                other => other,
            })
            .collect();
        let _ = self.control.send(Control::Keys(bytes));
    }

    /// Cuts (`false`) or restores (`true`) the reader's power: while off it answers nothing;
    /// when back it starts afresh with the key it last held.
    pub fn set_power(&self, on: bool) {
        let _ = self.control.send(Control::Power(on));
    }

    /// What the control panel has asked of the reader since the last call.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.try_iter().collect()
    }

    /// Waits up to `timeout` for the next request from the control panel.
    pub fn next_seen(&self, timeout: Duration) -> Option<Seen> {
        self.seen.recv_timeout(timeout).ok()
    }
}

impl Drop for EmulatedReader {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The reader's side of the wire: the pty master, non-blocking.
struct PtyChannel {
    master: Arc<OwnedFd>,
}

impl Channel for PtyChannel {
    fn get_id(&self) -> i32 {
        1
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        // SAFETY: reads into `buf` from an fd we hold open.
        let n = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        // EAGAIN (nothing yet) and EIO (no one on the slave side yet) both mean: no data.
        if n <= 0 {
            Err(ChannelError::WouldBlock)
        } else {
            Ok(n as usize)
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, ChannelError> {
        // SAFETY: writes from `buf` to an fd we hold open.
        let n = unsafe { libc::write(self.master.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(ChannelError::WouldBlock)
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
}

fn power_on(
    master: &Arc<OwnedFd>,
    address: u8,
    key: &Arc<Mutex<Option<[u8; 16]>>>,
    seen: &Sender<Seen>,
) -> Option<PeripheralDevice> {
    let held = *crate::mutex::lock(key);
    let mut info = PdInfoBuilder::new()
        .address(i32::from(address))
        .ok()?
        .baud_rate(9600)
        .ok()?
        .id(&PdId::from_number(address))
        .capabilities(&[
            PdCapability::CommunicationSecurity(PdCapEntity::new(1, 1)),
            PdCapability::LedControl(PdCapEntity::new(1, 1)),
            PdCapability::AudibleOutput(PdCapEntity::new(1, 1)),
            PdCapability::CardDataFormat(PdCapEntity::new(1, 1)),
            PdCapability::Readers(PdCapEntity::new(1, 1)),
        ]);
    info = match held {
        Some(scbk) => info.secure_channel_key(scbk),
        None => info.flag(OsdpFlag::InstallMode),
    };
    let channel = Box::new(PtyChannel {
        master: Arc::clone(master),
    });
    let mut pd = match PeripheralDevice::new(info, channel) {
        Ok(pd) => pd,
        Err(error) => {
            tracing::error!(%error, "emulated OSDP reader could not start");
            return None;
        }
    };
    let seen = seen.clone();
    let key = Arc::clone(key);
    pd.set_command_callback(move |command| {
        let report = match command {
            OsdpCommand::Led(led) => Seen::Led(led.clone()),
            OsdpCommand::Buzzer(buzzer) => Seen::Buzzer(*buzzer),
            OsdpCommand::KeySet(keyset) => {
                // Kept like a real reader keeps it in flash.
                if let Ok(scbk) = <[u8; 16]>::try_from(keyset.data.as_slice()) {
                    *crate::mutex::lock(&key) = Some(scbk);
                }
                Seen::KeySet
            }
            _ => return 0,
        };
        let _ = seen.send(report);
        0
    });
    Some(pd)
}

fn run(
    master: Arc<OwnedFd>,
    address: u8,
    key: Option<[u8; 16]>,
    control: Receiver<Control>,
    seen: Sender<Seen>,
) {
    let key = Arc::new(Mutex::new(key));
    let mut pd = power_on(&master, address, &key, &seen);
    loop {
        match control.try_recv() {
            Ok(Control::Card(bits)) => {
                let mut data = vec![0u8; bits.len().div_ceil(8)];
                for i in 0..bits.len() {
                    if bits.get(i) {
                        data[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                if let (Some(pd), Ok(card)) = (pd.as_mut(), OsdpEventCardRead::new_wiegand(bits.len(), data))
                {
                    let _ = pd.notify_event(OsdpEvent::CardRead(card));
                }
            }
            Ok(Control::Keys(keys)) => {
                if let Some(pd) = pd.as_mut() {
                    let _ = pd.notify_event(OsdpEvent::KeyPress(OsdpEventKeyPress::new(keys)));
                }
            }
            Ok(Control::Power(false)) => pd = None,
            Ok(Control::Power(true)) => {
                if pd.is_none() {
                    pd = power_on(&master, address, &key, &seen);
                }
            }
            Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        match pd.as_mut() {
            Some(pd) => pd.refresh(),
            None => {
                // Unpowered: whatever the control panel sends is lost on the wire.
                let mut sink = [0u8; 256];
                let _ = PtyChannel {
                    master: Arc::clone(&master),
                }
                .read(&mut sink);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
