//! A list answer parsed item by item as its bytes arrive, never held whole: the body's chunks go
//! to a JSON parser on a blocking thread, which hands each item to the caller's consumer (on
//! that thread, so it may write to the store). Memory holds one item and a few chunks, whether
//! the answer is a page of 500 or, with `skip_pagination`, a list of 130,000; and the JSON work
//! stays off the async workers the doors share.

use super::error::{ApiError, Operation};
use bytes::Bytes;
use reqwest::Response;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::Deserializer;
use std::io::{BufReader, Read};
use std::marker::PhantomData;

/// Chunks buffered between the connection and the parser.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Takes the items of a list as the parser produces them.
pub trait ItemConsumer<T>: Send + 'static {
    /// One item; an error stops the parse.
    fn item(&mut self, item: T) -> Result<(), String>;
    /// After the last item of a complete answer (on the parser's thread).
    fn end(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Reads `response`'s body (at most `limit` bytes) as a JSON array of `T`, handing each item to
/// `consume` on a blocking thread. Returns the consumer (always: it may hold part of the list
/// when the answer broke off) and the number of items, or why the answer stopped: a consumer
/// error as it is; bytes past `limit`, a connection that breaks or JSON that does not parse as
/// the operation's errors.
pub async fn each_item<T, C>(
    mut response: Response,
    operation: Operation,
    limit: u64,
    consume: C,
) -> (C, Result<u64, StreamError>)
where
    T: DeserializeOwned + 'static,
    C: ItemConsumer<T>,
{
    if let Some(declared) = response.content_length().filter(|length| *length > limit) {
        return (
            consume,
            Err(StreamError::Api(too_large(operation, limit, Some(declared)))),
        );
    }
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let parser = tokio::task::spawn_blocking(move || {
        let reader = BufReader::with_capacity(
            16 * 1024,
            ChunkReader {
                chunks: receiver,
                current: Bytes::new(),
            },
        );
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
    let mut read = 0u64;
    let mut transport = None;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => {
                transport = Some(super::client::transport(operation, &error));
                break;
            }
        };
        read += chunk.len() as u64;
        if read > limit {
            transport = Some(too_large(operation, limit, None));
            break;
        }
        if chunks.send(chunk).await.is_err() {
            // The parser stopped (malformed JSON, a consumer error): no need to read further.
            break;
        }
    }
    drop(chunks);
    // A blocking task is cancelled only by a runtime that is going away, and a panic in the
    // consumer ends the process anyway (`panic = "abort"`): neither returns here.
    let (consume, parsed, consumer_error) = match parser.await {
        Ok(done) => done,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the list parser did not finish: {error}"),
    };
    let result = if let Some(error) = consumer_error {
        Err(StreamError::Consumer(error))
    } else if let Some(error) = transport {
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

/// Why a streamed list stopped.
#[derive(Debug)]
pub enum StreamError {
    /// The answer: a broken connection, too many bytes, JSON that does not parse.
    Api(ApiError),
    /// The consumer refused an item (its message).
    Consumer(String),
}

fn too_large(operation: Operation, limit: u64, declared: Option<u64>) -> ApiError {
    ApiError::Decode {
        operation,
        detail: match declared {
            Some(declared) => format!("the answer is {declared} bytes, more than the {limit} allowed"),
            None => format!("the answer passed the {limit} bytes allowed"),
        },
    }
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
