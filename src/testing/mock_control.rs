//! A blocking client for the mock GPIO control socket (one JSON request, one JSON reply).

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// Sends `request` and returns the reply. Panics when the socket cannot be used: in a test that
/// is the failure to report. Call from a blocking context (`spawn_blocking` in async tests).
pub fn control(socket: &Path, request: Value) -> Value {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("mock control socket {}: {e}", socket.display()));
    writeln!(stream, "{request}").expect("send a control request");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("read a control reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("control reply `{line}`: {e}"))
}
