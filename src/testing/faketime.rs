//! A wall clock the test moves under a running process: Debian's libfaketime, preloaded, reading
//! its offset from a file on every call, with the monotonic clocks left alone
//! (`FAKETIME_DONT_FAKE_MONOTONIC=1`: libfaketime then passes CLOCK_MONOTONIC, _RAW, _COARSE and
//! CLOCK_BOOTTIME through untouched), which is what an NTP step or an RTC correction does.

use jiff::SignedDuration;
use std::path::{Path, PathBuf};

/// Where Debian's `libfaketime` package puts the library (any architecture directory).
const SEARCH: &str = "/usr/lib";

/// The multi-threaded libfaketime, if installed (`apt-get install faketime`).
pub fn library() -> Option<PathBuf> {
    std::fs::read_dir(SEARCH)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1"))
        .find(|path| path.exists())
}

/// The offset file and the environment that makes a child process read it.
pub struct FakeClock {
    file: PathBuf,
    library: PathBuf,
}

impl FakeClock {
    /// A clock in `dir` that starts at the real time. Panics when libfaketime is missing: the
    /// tests that use it cannot run without it (CI installs it).
    pub fn new(dir: &Path) -> FakeClock {
        let library = library().unwrap_or_else(|| {
            panic!("libfaketime is not installed: apt-get install faketime (Debian's libfaketime)")
        });
        let clock = FakeClock {
            file: dir.join("faketime"),
            library,
        };
        clock.set_offset(SignedDuration::ZERO);
        clock
    }

    /// The variables for the child process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.display().to_string()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }

    /// Steps the child's wall clock to the real time plus `offset` (whole seconds). The file is
    /// replaced atomically, so the library never reads half of it.
    pub fn set_offset(&self, offset: SignedDuration) {
        let temporary = self.file.with_extension("new");
        std::fs::write(&temporary, format!("{:+}\n", offset.as_secs())).expect("write the faketime offset");
        std::fs::rename(&temporary, &self.file).expect("replace the faketime offset");
    }
}
