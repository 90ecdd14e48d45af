//! Wiegand decoding as pure functions over (line, edge, kernel timestamp): frame assembly with a
//! silence timeout, noise rejection and implausible-timestamp resynchronisation (`frame`), card
//! formats as field maps with parity (`card`), and keypad bursts into PINs (`keypad`).
//!
//! Only decoding lives here. What a reader sends (encoding cards and keys, generating edges) is
//! the mock backend's business (`hw::mock::reader`), so the decoder is never checked against its
//! own inverse: its tests use frames from device documentation and captured reads.
//!
//! Pure: no tokio, sled or reqwest; time only comes in with the edges and the caller's clock.

mod bits;
pub mod card;
pub mod frame;
pub mod keypad;
#[cfg(test)]
mod vectors;

pub use bits::{Bits, MAX_BITS};
pub use card::{
    builtin, builtin_layouts, decode_card, BitOrder, BitRange, BitSet, CardFormats, DecodeError, Layout,
    Parity, ParityBit, RAW_BITS,
};
pub use frame::{
    DecoderConfig, Edge, EdgeKind, Frame, FrameError, FrameOutcome, WiegandDecoder, WiegandLine,
};
pub use keypad::{decode_key, Key, PinEntry, PinError, MAX_PIN_DIGITS};
