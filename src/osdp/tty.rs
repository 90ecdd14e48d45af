//! A serial device opened the way an OSDP bus needs it: raw 8N1, no flow control, non-blocking,
//! and exclusive (TIOCEXCL, so no other process can open the tty, and a `flock`, so none that
//! already holds it can talk on the bus unnoticed).
//!
//! Plain POSIX termios (tcsetattr with the B9600..B230400 constants): OSDP only uses those
//! standard rates (v2.2 §5.2). The `serialport` crate was tried first; on Linux it sets the
//! rate through the termios2 ioctls (TCGETS2/TCSETS2), which qemu-user does not implement, and
//! CI runs the ARM test suite under qemu-user.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// The termios speed constant for an OSDP baud rate.
fn speed(baud: u32) -> io::Result<libc::speed_t> {
    Ok(match baud {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} baud is not an OSDP rate"),
            ))
        }
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub struct Tty {
    file: File,
}

impl Tty {
    pub fn open(path: &Path, baud: u32) -> io::Result<Tty> {
        let speed = speed(baud)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let fd = file.as_raw_fd();
        // SAFETY: termios calls on a tty fd we own, with a termios struct tcgetattr filled.
        unsafe {
            check(libc::ioctl(fd, libc::TIOCEXCL))?;
            if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "in use by another process",
                ));
            }
            let mut termios: libc::termios = std::mem::zeroed();
            check(libc::tcgetattr(fd, &mut termios))?;
            libc::cfmakeraw(&mut termios);
            termios.c_cflag &= !(libc::CSIZE | libc::CSTOPB | libc::PARENB | libc::CRTSCTS);
            termios.c_cflag |= libc::CS8 | libc::CLOCAL | libc::CREAD;
            termios.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
            termios.c_cc[libc::VMIN] = 0;
            termios.c_cc[libc::VTIME] = 0;
            check(libc::cfsetispeed(&mut termios, speed))?;
            check(libc::cfsetospeed(&mut termios, speed))?;
            check(libc::tcsetattr(fd, libc::TCSANOW, &termios))?;
            libc::tcflush(fd, libc::TCIOFLUSH);
        }
        Ok(Tty { file })
    }

    /// Reads what has arrived; `WouldBlock` when nothing has, `BrokenPipe` when the device
    /// hung up (a USB adapter unplugged, the other end of a pty closed).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A raw tty with VMIN = VTIME = 0 reads 0 bytes both when idle and after a hang-up;
        // poll tells them apart.
        self.wait(libc::POLLIN, Duration::ZERO)?;
        self.file.read(buf)
    }

    /// Writes, waiting up to `wait` for room in the output buffer.
    pub fn write(&mut self, buf: &[u8], wait: Duration) -> io::Result<usize> {
        self.wait(libc::POLLOUT, wait)?;
        self.file.write(buf)
    }

    fn wait(&self, events: libc::c_short, wait: Duration) -> io::Result<()> {
        let mut poll = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one pollfd for an fd we own.
        let ready = unsafe { libc::poll(&mut poll, 1, wait.as_millis() as libc::c_int) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        if poll.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the device hung up"));
        }
        if poll.revents & events == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }

    /// Drops bytes received but not read yet.
    pub fn discard_input(&mut self) {
        // SAFETY: tcflush on a tty fd we own.
        unsafe { libc::tcflush(self.file.as_raw_fd(), libc::TCIFLUSH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_opens_raw_and_exclusive() {
        let (master, slave) = crate::osdp::pty::open_pair().unwrap();
        let mut tty = Tty::open(&slave, 9600).unwrap();
        let busy = Tty::open(&slave, 9600).err().expect("a second open is refused");
        assert!(
            matches!(
                busy.kind(),
                io::ErrorKind::ResourceBusy | io::ErrorKind::PermissionDenied
            ) || busy.raw_os_error() == Some(libc::EBUSY),
            "{busy}"
        );
        let mut buf = [0u8; 8];
        assert_eq!(tty.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        // Raw: a newline is not turned into CR LF on the way out.
        assert_eq!(tty.write(b"\n\x53", Duration::from_millis(100)).unwrap(), 2);
        let mut peer = File::from(master);
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\n\x53");
    }

    #[test]
    fn only_osdp_rates_are_accepted() {
        let (_master, slave) = crate::osdp::pty::open_pair().unwrap();
        let error = Tty::open(&slave, 1200).err().unwrap();
        assert!(error.to_string().contains("1200"), "{error}");
    }
}
