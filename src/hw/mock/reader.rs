//! What a simulated reader sends: card frames with correct parity, keypad bursts, and the edges
//! for them, transmitted in real time.
//!
//! This is the inverse of `wiegand`, kept apart from it on purpose: the decoder is tested
//! against published frames, never against this encoder. Edges are stamped with the time they
//! are handed to the door (CLOCK_MONOTONIC, never ahead of it) and one door's frames go out one
//! after another with a silence between them, as on a real wire.

use crate::credential::CardFormat;
use crate::hw::{monotonic_ns, DoorInput, InputEvent};
use crate::wiegand::{self, Bits, Edge, EdgeKind, Key, Layout, WiegandLine};
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    OutOfRange {
        format: CardFormat,
        field: &'static str,
        max: u64,
    },
    /// `raw`, an unknown name, or a format without a facility field given a facility code.
    NotEncodable(CardFormat),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::OutOfRange { format, field, max } => {
                write!(f, "{format}: {field} must be at most {max}")
            }
            EncodeError::NotEncodable(format) => {
                write!(f, "{format} has no layout to encode that with")
            }
        }
    }
}

/// Builds a frame of a built-in format with correct parity.
pub fn encode_card(format: CardFormat, facility: u32, number: u64) -> Result<Bits, EncodeError> {
    let layout = wiegand::builtin(&format).ok_or(EncodeError::NotEncodable(format))?;
    encode_with(layout, facility, number)
}

/// Builds a frame of `layout` with correct parity, in the order its reader sends it. A facility
/// code other than 0 needs a facility field.
pub fn encode_with(layout: &Layout, facility: u32, number: u64) -> Result<Bits, EncodeError> {
    let (facility_width, number_width) = layout.field_widths();
    let max = |width: usize| {
        if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        }
    };
    let out_of_range = |field, width| EncodeError::OutOfRange {
        format: layout.format.clone(),
        field,
        max: max(width),
    };
    if facility as u64 > max(facility_width) {
        return Err(match layout.facility {
            Some(_) => out_of_range("facility", facility_width),
            None => EncodeError::NotEncodable(layout.format.clone()),
        });
    }
    if number > max(number_width) {
        return Err(out_of_range("number", number_width));
    }
    let len = layout.bits as u8;
    let shift = |end: usize| layout.bits - 1 - end; // a field's last bit → shift from the right
    let mut value = (number as u128) << shift(layout.number.to);
    if let Some(field) = layout.facility {
        value |= (facility as u128) << shift(field.to);
    }
    // Parity bits start as zero; each is then set to make its check hold, in the layout's order
    // (a check that covers another parity bit comes after it), repeated until all hold.
    for _ in 0..=layout.parity.len() {
        let frame = Bits::from_value(value, len);
        if layout.parity_ok(&frame) {
            return Ok(layout.order.apply(&frame));
        }
        for check in &layout.parity {
            if !check.holds(&Bits::from_value(value, len)) {
                value ^= 1 << shift(check.at);
            }
        }
    }
    Err(EncodeError::NotEncodable(layout.format.clone()))
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
    use crate::wiegand::decode_key;

    #[test]
    fn encoded_cards_pass_their_formats_checks() {
        for layout in wiegand::builtin_layouts() {
            let facility = if layout.facility.is_some() { 100 } else { 0 };
            let bits = encode_with(layout, facility, 200).unwrap();
            assert_eq!(bits.len(), layout.bits);
            assert!(layout.parity_ok(&layout.ordered(&bits)), "{}", layout.format);
        }
        assert!(encode_card(CardFormat::H10301, 256, 1).is_err());
        assert!(encode_card(CardFormat::H10304, 1, 524_288).is_err());
        assert!(
            encode_card(CardFormat::H10302, 1, 1).is_err(),
            "H10302 has no facility"
        );
        assert_eq!(
            encode_card(CardFormat::RAW, 1, 1),
            Err(EncodeError::NotEncodable(CardFormat::RAW))
        );
    }

    /// The mock's encoder agrees with a real reader's output (the Corporate 1000 frame of
    /// `wiegand::vectors`: jkramarz/TheTick pull request #20), whose three parity bits cover
    /// each other.
    #[test]
    fn corporate_1000_parity_bits_are_set_in_order() {
        let bits = encode_card(CardFormat::CORPORATE_1000_35, 1337, 2137).unwrap();
        assert_eq!(bits.value(), 0x4A72010B3);
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
