//! Reading answers with a size limit, parsing as the bytes arrive.
//!
//! An answer is never buffered whole: chunks go from the connection to a JSON parser running on
//! a blocking thread (serde_json's reader), so memory holds the parsed value and a few chunks,
//! not the answer's text, and the JSON work stays off the async workers the doors share. A list
//! is handed over item by item as it is parsed ([`each_item`]): memory holds one item. An answer whose `Content-Length` is over the limit is refused before
//! a byte is read; one without (chunked) is cut off as soon as it passes the limit. Either way
//! the connection is dropped rather than drained.

use super::error::{ApiError, Operation};
use bytes::Bytes;
use reqwest::Response;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::Deserializer;
use std::io::{BufReader, Read};
use std::marker::PhantomData;

/// Chunks buffered between the connection and the parser.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Parses `response`'s body as JSON of type `T`, reading at most `limit` bytes.
pub async fn decode_json<T: DeserializeOwned + Send + 'static>(
    response: Response,
    operation: Operation,
    limit: u64,
) -> Result<T, ApiError> {
    if let Some(declared) = response.content_length().filter(|length| *length > limit) {
        return Err(too_large(operation, limit, Some(declared)));
    }
    let (chunks, reader) = chunk_channel();
    let parser = tokio::task::spawn_blocking(move || serde_json::from_reader::<_, T>(reader));
    let pumped = pump(response, operation, limit, chunks).await;
    let parsed = parser.await;
    pumped?;
    match parsed {
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

/// Takes the items of a list as the parser produces them (see [`each_item`]).
pub trait ItemConsumer<T>: Send + 'static {
    /// One item; an error stops the parse.
    fn item(&mut self, item: T) -> Result<(), String>;
    /// After the last item of a complete answer (on the parser's thread).
    fn end(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Why a list answer read by [`each_item`] stopped.
#[derive(Debug)]
pub enum StreamError {
    /// The answer: a broken connection, too many bytes, JSON that does not parse.
    Api(ApiError),
    /// The consumer refused an item (its message).
    Consumer(String),
}

/// Reads `response`'s body (at most `limit` bytes) as a JSON array of `T`, handing each item to
/// `consume` on the parser's blocking thread as it is parsed, so a list is never held whole —
/// a page of 500 or, with `skip_pagination`, a list of 130,000 — and the consumer may write to
/// the store. Returns the consumer (always: it may hold part of the list when the answer broke
/// off) and the number of items, or why the answer stopped.
pub async fn each_item<T, C>(
    response: Response,
    operation: Operation,
    limit: u64,
    consume: C,
) -> (C, Result<u64, StreamError>)
where
    T: DeserializeOwned + 'static,
    C: ItemConsumer<T>,
{
    if let Some(declared) = response.content_length().filter(|length| *length > limit) {
        let error = too_large(operation, limit, Some(declared));
        return (consume, Err(StreamError::Api(error)));
    }
    let (chunks, reader) = chunk_channel();
    let parser = tokio::task::spawn_blocking(move || {
        let mut consume = consume;
        let mut consumer_error = None;
        let mut deserializer = serde_json::Deserializer::from_reader(reader);
        let parsed = (&mut deserializer).deserialize_seq(EachVisitor::<T, _> {
            consume: &mut consume,
            error: &mut consumer_error,
            _item: PhantomData,
        });
        let parsed = parsed.and_then(|count| deserializer.end().map(|()| count));
        if parsed.is_ok() {
            if let Err(error) = consume.end() {
                consumer_error = Some(error);
            }
        }
        (consume, parsed, consumer_error)
    });
    let pumped = pump(response, operation, limit, chunks).await;
    // A blocking task is cancelled only by a runtime that is going away, and a panic in the
    // consumer ends the process anyway (`panic = "abort"`): neither returns here.
    let (consume, parsed, consumer_error) = match parser.await {
        Ok(done) => done,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the list parser did not finish: {error}"),
    };
    let result = if let Some(error) = consumer_error {
        Err(StreamError::Consumer(error))
    } else if let Err(error) = pumped {
        Err(StreamError::Api(error))
    } else {
        parsed.map_err(|error| {
            StreamError::Api(ApiError::Decode {
                operation,
                detail: error.to_string(),
            })
        })
    };
    (consume, result)
}

struct EachVisitor<'a, T, C> {
    consume: &'a mut C,
    error: &'a mut Option<String>,
    _item: PhantomData<T>,
}

impl<'de, T, C> Visitor<'de> for EachVisitor<'_, T, C>
where
    T: DeserializeOwned,
    C: ItemConsumer<T>,
{
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut count = 0;
        while let Some(item) = seq.next_element::<T>()? {
            count += 1;
            if let Err(error) = self.consume.item(item) {
                *self.error = Some(error.clone());
                return Err(serde::de::Error::custom(error));
            }
        }
        Ok(count)
    }
}

fn too_large(operation: Operation, limit: u64, declared: Option<u64>) -> ApiError {
    ApiError::TooLarge {
        operation,
        limit,
        declared,
    }
}

/// A channel of chunks and the blocking reader at its other end.
fn chunk_channel() -> (tokio::sync::mpsc::Sender<Bytes>, BufReader<ChunkReader>) {
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let reader = BufReader::new(ChunkReader {
        chunks: receiver,
        current: Bytes::new(),
    });
    (chunks, reader)
}

/// Sends `response`'s body to the parser chunk by chunk, at most `limit` bytes; ends the stream
/// (dropping `chunks`) when the body ends, the parser stops taking chunks (it failed), or the
/// limit is passed (then the connection is dropped rather than drained).
async fn pump(
    mut response: Response,
    operation: Operation,
    limit: u64,
    chunks: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), ApiError> {
    let mut read = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(error) => return Err(super::client::transport(operation, &error)),
        };
        read += chunk.len() as u64;
        if read > limit {
            // The parser sees the stream end early and fails; its answer is not needed.
            return Err(too_large(operation, limit, None));
        }
        if chunks.send(chunk).await.is_err() {
            // The parser stopped (malformed JSON, a consumer error): no need to read further.
            return Ok(());
        }
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
