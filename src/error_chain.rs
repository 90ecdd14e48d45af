//! An error with every cause it carries, as one line for an operator: `HTTP client: builder
//! error: no CA certificates were loaded from the system`. Libraries often put the useful part
//! (the root cause) in `source()` and only a generic word in `Display`; showing `Display` alone
//! drops it.
//!
//! Use `chain(&error)` (or `Chain(&error)` as a tracing field, `error = %Chain(&error)`) wherever
//! an error is shown to an operator: the command line, the journal, `status`.

use std::error::Error;
use std::fmt;

/// `error`'s message followed by each source's, joined with `": "`. A source whose text the line
/// already holds is skipped (wrappers such as `#[error("{0}")]` or `#[error("{0} (key)")]`
/// repeat their source).
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Displays `chain(error)`: for tracing fields and `format!`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("HTTP client: builder error")]
    struct Builder {
        #[source]
        source: Root,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("no CA certificates were loaded from the system")]
    struct Root;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Repeats(#[source] Root);

    #[test]
    fn every_cause_is_shown_in_order() {
        let error = Builder { source: Root };
        assert_eq!(
            chain(&error),
            "HTTP client: builder error: no CA certificates were loaded from the system"
        );
        assert_eq!(Chain(&error).to_string(), chain(&error));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0} (`store.path`)")]
    struct Keyed(#[source] Root);

    #[test]
    fn a_wrapper_that_repeats_its_source_is_not_doubled() {
        assert_eq!(
            chain(&Repeats(Root)),
            "no CA certificates were loaded from the system"
        );
        // Also when the wrapper adds words after it (a key: "X (`store.path`): X" before).
        assert_eq!(
            chain(&Keyed(Root)),
            "no CA certificates were loaded from the system (`store.path`)"
        );
    }

    #[test]
    fn an_io_error_inside_another_error() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let wrapped = std::io::Error::other(Builder { source: Root });
        assert_eq!(chain(&io), "No such file or directory");
        assert!(chain(&wrapped).ends_with("no CA certificates were loaded from the system"));
    }
}
