//! Pseudo-terminal pairs: a stand-in for an RS-485 bus on machines without one. The agent opens
//! the slave side as its serial port (exactly as it opens `/dev/ttyS1`); an emulated reader
//! talks on the master side.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Opens a pty pair: the master (blocking, close-on-exec) and the slave's path (`/dev/pts/N`).
pub fn open_pair() -> io::Result<(OwnedFd, PathBuf)> {
    // SAFETY: plain libc calls; the fd is owned by `master` from here on, and the name buffer
    // is large enough for any /dev/pts path (ptsname_r reports ERANGE otherwise).
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(fd);
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        let rc = libc::ptsname_r(fd, name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let path = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        Ok((master, PathBuf::from(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slave_path_exists_while_the_master_is_open() {
        let (master, slave) = open_pair().unwrap();
        assert!(slave.starts_with("/dev/pts"), "{}", slave.display());
        assert!(slave.exists());
        drop(master);
    }
}
