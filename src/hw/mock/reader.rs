//! What a simulated reader sends: card frames with correct parity, keypad bursts, and the edges
//! for them, transmitted in real time.
//!
//! This is the inverse of `wiegand`, kept apart from it on purpose: the decoder is tested
//! against published frames, never against this encoder. Edges are stamped with the time they
//! are handed to the door (CLOCK_MONOTONIC, never ahead of it) and one door's frames go out one
//! after another with a silence between them, as on a real wire.

use crate::credential::CardFormat;
use crate::hw::{monotonic_ns, DoorInput, InputEvent};
use crate::wiegand::{self, Bits, Edge, EdgeKind, Key, WiegandLine};
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    OutOfRange {
        format: CardFormat,
        field: &'static str,
        max: u64,
    },
    NotEncodable(CardFormat),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::OutOfRange { format, field, max } => {
                write!(f, "{format}: {field} must be at most {max}")
            }
            EncodeError::NotEncodable(format) => write!(f, "{format} has no fixed layout to encode"),
        }
    }
}

/// Builds a card frame with correct parity, from the format's layout.
pub fn encode_card(format: CardFormat, facility: u32, number: u64) -> Result<Bits, EncodeError> {
    let layout = wiegand::layout(format).ok_or(EncodeError::NotEncodable(format))?;
    let (facility_width, number_width) = layout.field_widths();
    let max = |width: usize| (1u64 << width) - 1;
    if facility as u64 > max(facility_width) {
        return Err(EncodeError::OutOfRange {
            format,
            field: "facility",
            max: max(facility_width),
        });
    }
    if number > max(number_width) {
        return Err(EncodeError::OutOfRange {
            format,
            field: "number",
            max: max(number_width),
        });
    }
    let at = |index: usize| layout.bits - 1 - index; // bit index → shift from the right
    let mut value =
        ((facility as u128) << at(*layout.facility.end())) | ((number as u128) << at(*layout.number.end()));
    // Parity bits start as zero; each is then set to make its range come out right.
    if Bits::from_value(value, layout.bits as u8).ones(*layout.even.start(), *layout.even.end()) % 2 == 1 {
        value |= 1 << at(0);
    }
    if Bits::from_value(value, layout.bits as u8).ones(*layout.odd.start(), *layout.odd.end()) % 2 == 0 {
        value |= 1;
    }
    Ok(Bits::from_value(value, layout.bits as u8))
}

/// A key as a keypad in burst mode sends it: 4 bits (the code), or 8 bits (the code's one's
/// complement first, the code last; see `wiegand::keypad` for the sources).
pub fn encode_key(key: Key, eight_bit: bool) -> Bits {
    let code = key.code() as u128;
    if eight_bit {
        Bits::from_value(((!code & 0xF) << 4) | code, 8)
    } else {
        Bits::from_value(code, 4)
    }
}

/// Pulse timing for generated edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulseTiming {
    /// Low pulse per bit, ns.
    pub pulse_width_ns: u64,
    /// From one bit's falling edge to the next one's, ns.
    pub bit_interval_ns: u64,
}

impl Default for PulseTiming {
    fn default() -> Self {
        PulseTiming {
            pulse_width_ns: 50_000,
            bit_interval_ns: 2_000_000,
        }
    }
}

/// The falling and rising edges a reader produces for `bits`, starting at `start_ns`.
pub fn edges_for(bits: &Bits, start_ns: u64, timing: &PulseTiming) -> Vec<Edge> {
    (0..bits.len())
        .flat_map(|i| {
            let line = if bits.get(i) {
                WiegandLine::D1
            } else {
                WiegandLine::D0
            };
            let fall = start_ns + i as u64 * timing.bit_interval_ns;
            [
                Edge {
                    line,
                    kind: EdgeKind::Falling,
                    timestamp_ns: fall,
                },
                Edge {
                    line,
                    kind: EdgeKind::Rising,
                    timestamp_ns: fall + timing.pulse_width_ns,
                },
            ]
        })
        .collect()
}

/// Frames waiting for one door's simulated reader: a control request's frames go out together.
pub type Transmission = Vec<Bits>;

/// Requests a door's reader holds before refusing more (each is at most one PIN or one frame).
pub const QUEUED_TRANSMISSIONS: usize = 8;

/// Sends queued frames to a door in real time until the queue or the door goes away. Each frame
/// starts no earlier than `silence_ns` after the previous one ended, and is handed over whole
/// once the monotonic clock has passed its last edge: no edge is ever stamped ahead of the
/// clock, and a busy runtime cannot split a frame (which a reader thread stalled mid-frame
/// could do on hardware; here it would only make the simulation flaky).
pub async fn transmit(
    mut queue: mpsc::Receiver<Transmission>,
    door: mpsc::Sender<InputEvent>,
    silence_ns: u64,
) {
    let mut previous_end = 0u64;
    while let Some(frames) = queue.recv().await {
        for bits in frames {
            let start = monotonic_ns().max(previous_end.saturating_add(silence_ns));
            let edges = edges_for(&bits, start, &PulseTiming::default());
            let end = edges.last().map_or(start, |e| e.timestamp_ns);
            // Tokio's timer rounds to milliseconds: sleep until the clock is really past `end`.
            loop {
                let wait = end.saturating_sub(monotonic_ns());
                if wait == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_nanos(wait)).await;
            }
            for edge in &edges {
                let event = InputEvent {
                    input: match edge.line {
                        WiegandLine::D0 => DoorInput::D0,
                        WiegandLine::D1 => DoorInput::D1,
                    },
                    active: edge.kind == EdgeKind::Falling,
                    timestamp_ns: edge.timestamp_ns,
                };
                if door.send(event).await.is_err() {
                    return; // the door task has stopped
                }
            }
            previous_end = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wiegand::{decode_key, LAYOUTS};

    #[test]
    fn encoded_cards_have_the_published_parity_scheme() {
        for layout in &LAYOUTS {
            let bits = encode_card(layout.format, 100, 200).unwrap();
            assert_eq!(bits.len(), layout.bits);
            assert!(layout.parity_ok(&bits), "{}", layout.format);
        }
        assert!(encode_card(CardFormat::H10301, 256, 1).is_err());
        assert!(encode_card(CardFormat::H10304, 1, 524_288).is_err());
        assert_eq!(
            encode_card(CardFormat::Raw, 1, 1),
            Err(EncodeError::NotEncodable(CardFormat::Raw))
        );
    }

    /// The mock's keypad matches the wire (HID PINpad 7393760 rev E, Table 1): 1 = E1, 6 = 96,
    /// `#` = 4B, `*` = 5A.
    #[test]
    fn eight_bit_keys_are_complement_first() {
        for (c, wire) in [('1', 0xE1), ('6', 0x96), ('#', 0x4B), ('*', 0x5A), ('0', 0xF0)] {
            let key = Key::from_char(c).unwrap();
            assert_eq!(encode_key(key, true).value(), wire, "{c}");
            assert_eq!(decode_key(&encode_key(key, true)), Some(key));
            assert_eq!(encode_key(key, false).value(), key.code() as u128);
        }
    }
}
