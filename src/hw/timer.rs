//! Waiting for a CLOCK_MONOTONIC deadline with sub-millisecond precision: a Wiegand frame ends a
//! few ms after its last bit, and the door decides when that silence is over. Tokio's timer
//! works in whole milliseconds (a sleep ends up to ~2 ms late), so the door task waits on a
//! timerfd armed at the absolute deadline instead, on the clock the kernel stamps GPIO edges
//! with. Where a timerfd cannot be had, tokio's timer is the fallback.

use super::monotonic_ns;
use std::time::Duration;

/// One door task's deadline timer. Create it inside the runtime that will poll it.
pub struct MonotonicTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl MonotonicTimer {
    pub fn new() -> MonotonicTimer {
        MonotonicTimer {
            #[cfg(target_os = "linux")]
            fd: match timerfd::create() {
                Ok(fd) => Some(fd),
                Err(error) => {
                    tracing::warn!(%error, "no timerfd; door deadlines fall back to the millisecond timer");
                    None
                }
            },
        }
    }

    /// Resolves once CLOCK_MONOTONIC has reached `deadline_ns` (at once if it has).
    pub async fn sleep_until(&mut self, deadline_ns: u64) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match timerfd::wait(fd, deadline_ns).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "timerfd failed; door deadlines fall back to the millisecond timer");
                    self.fd = None;
                }
            }
        }
        let wait = deadline_ns.saturating_sub(monotonic_ns());
        tokio::time::sleep(Duration::from_nanos(wait)).await;
    }
}

impl Default for MonotonicTimer {
    fn default() -> Self {
        MonotonicTimer::new()
    }
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub fn create() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd we own.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else; the
        // OwnedFd keeps it open, unchanged, for as long as the AsyncFd that owns it lives.
        unsafe {
            AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd), Interest::READABLE)
                .map_err(|e| e.into_parts().1)
        }
    }

    /// Arms the timer at `deadline_ns` (absolute) and waits for it to expire.
    pub async fn wait(fd: &AsyncFd<OwnedFd>, deadline_ns: u64) -> io::Result<()> {
        // A zero it_value would disarm the timer: a deadline at 0 is simply in the past.
        let deadline_ns = deadline_ns.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // The system call itself, not libc's wrapper: a preloaded library that fakes the wall
        // clock (libfaketime, as the clock-step tests run the agent) wraps timerfd_settime and
        // moves absolute deadlines by its wall-clock offset even on CLOCK_MONOTONIC, so a clock
        // set back 40 s held every frame's end 40 s. The deadline is on the kernel's clock.
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for (null).
        let armed = unsafe {
            libc::syscall(
                libc::SYS_timerfd_settime,
                fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec as *const libc::itimerspec,
                std::ptr::null_mut::<libc::itimerspec>(),
            )
        };
        if armed < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut ready = fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64 we own.
            let read = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if read == 8 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_until_the_deadline_and_not_before() {
        let mut timer = MonotonicTimer::new();
        for wait_us in [0u64, 300, 2_000, 5_000] {
            let deadline = monotonic_ns() + wait_us * 1_000;
            timer.sleep_until(deadline).await;
            assert!(monotonic_ns() >= deadline, "woke early for {wait_us} µs");
        }
        // A deadline in the past (or at 0) returns at once.
        timer.sleep_until(0).await;
        timer.sleep_until(monotonic_ns() - 1_000_000).await;
    }
}
