//! What the command-line tools print on stdout. A reader that hangs up early
//! (`doorflow-agent check-config | head -1`) ends the command as it ends `cat` or `ls`: killed
//! by SIGPIPE, with no message. Rust ignores SIGPIPE and its `println!` panics on the EPIPE that
//! follows, so every line the CLI prints goes through here instead.

use std::fmt;
use std::io::{self, Write};

/// Why a line did not reach stdout.
#[derive(Debug)]
pub enum OutputError {
    /// The reader closed the pipe (EPIPE): nobody wants the rest.
    Closed,
    /// Anything else (a full disk behind `> file`, EIO).
    Failed(io::Error),
}

/// Writes `args` to stdout and flushes it, so an error is seen here and not at exit.
pub fn write_stdout(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut stdout = io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Err(OutputError::Closed),
        Err(error) => Err(OutputError::Failed(error)),
    }
}

/// For a command with nothing left to clean up: prints, or ends the process on a closed
/// stdout (SIGPIPE, as above) or a failed one (a message on stderr, exit status 1).
pub fn print_or_exit(args: fmt::Arguments<'_>) {
    match write_stdout(args) {
        Ok(()) => {}
        Err(error) => exit_on(error),
    }
}

/// Ends the process for an output error: see [`print_or_exit`].
pub fn exit_on(error: OutputError) -> ! {
    match error {
        OutputError::Closed => end_by_sigpipe(),
        OutputError::Failed(error) => {
            let _ = writeln!(io::stderr(), "error: cannot write to stdout: {error}");
            std::process::exit(1)
        }
    }
}

/// Dies of SIGPIPE with its default action, so a shell sees status 141 as for any tool that
/// wrote into a closed pipe.
fn end_by_sigpipe() -> ! {
    // SAFETY: resetting a signal's disposition to its default and raising it are
    // async-signal-safe and touch no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached: SIGPIPE's default action ends the process. 128 + 13 if it somehow did not.
    std::process::exit(141)
}

/// `print!` for the CLI: see [`print_or_exit`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli_output::print_or_exit(format_args!($($arg)*))
    };
}

/// `println!` for the CLI: see [`print_or_exit`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli_output::print_or_exit(format_args!("{}\n", format_args!($($arg)*)))
    };
}
