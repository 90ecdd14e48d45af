//! Reading answers with a size limit, parsing as the bytes arrive.
//!
//! A list page is never buffered whole: chunks go from the connection to a JSON parser running
//! on a blocking thread (serde_json's reader, item by item into the result), so memory holds the
//! parsed records and a few chunks, not the answer's text, and the JSON work stays off the async
//! workers the doors share. An answer whose `Content-Length` is over the limit is refused before
//! a byte is read; one without (chunked) is cut off as soon as it passes the limit. Either way
//! the connection is dropped rather than drained.

use super::error::{ApiError, Operation};
use bytes::Bytes;
use reqwest::Response;
use serde::de::DeserializeOwned;
use std::io::{BufReader, Read};

/// Chunks buffered between the connection and the parser.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Parses `response`'s body as JSON of type `T`, reading at most `limit` bytes.
pub async fn decode_json<T: DeserializeOwned + Send + 'static>(
    mut response: Response,
    operation: Operation,
    limit: u64,
) -> Result<T, ApiError> {
    let too_large = |declared| ApiError::TooLarge {
        operation,
        limit,
        declared,
    };
    if let Some(declared) = response.content_length().filter(|length| *length > limit) {
        return Err(too_large(Some(declared)));
    }
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let parser = tokio::task::spawn_blocking(move || {
        let reader = BufReader::new(ChunkReader {
            chunks: receiver,
            current: Bytes::new(),
        });
        serde_json::from_reader::<_, T>(reader)
    });
    let mut read = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => return Err(super::client::transport(operation, &error)),
        };
        read += chunk.len() as u64;
        if read > limit {
            // The parser sees the stream end early and fails; its answer is not needed.
            return Err(too_large(None));
        }
        if chunks.send(chunk).await.is_err() {
            // The parser stopped (malformed JSON): no need to read further.
            break;
        }
    }
    drop(chunks);
    match parser.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(ApiError::Decode {
            operation,
            detail: error.to_string(),
        }),
        Err(error) => Err(ApiError::Decode {
            operation,
            detail: format!("parser task failed: {error}"),
        }),
    }
}

/// At most `limit` bytes of `response`'s body, for an error body's excerpt and fields (the rest
/// is not read).
pub async fn read_prefix(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            _ => break,
        }
    }
    body
}

/// The chunks as a byte stream for the blocking parser; the stream ends when the sender is
/// dropped.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
