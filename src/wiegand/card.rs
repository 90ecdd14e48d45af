//! Card formats: which bits of a frame are the facility code, the card number and the parity.
//!
//! A format is data (`Layout`), so further layouts can be added without new decoding code.
//! Sources: HID Global, "Understanding Card Data Formats" (white paper, 2006) for the parity
//! scheme; the H10301 layout as HID Technical Support's Tech Tip #5 "The Standard 26 Bit Format"
//! shows it (`PAAAAAAAABBBBBBBBBBBBBBBBP`, even parity over the first 13 bits, odd over the last
//! 13); H10306 (34-bit, 16-bit facility and number, parity over 17 + 17 bits); H10304 (37-bit,
//! 16-bit facility, 19-bit number, parity over the first and the last 19 bits, which share bit
//! 18), as the card-layout table at https://www.ooaccess.com/kb/37-bit-fc/ gives it.

use super::Bits;
use crate::credential::{CardFormat, CardRead};
use std::fmt;
use std::ops::RangeInclusive;

/// Where a format keeps its fields: inclusive bit indexes counted from the first bit on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub format: CardFormat,
    pub bits: usize,
    /// Bits covered by the leading even-parity bit (bit 0 included).
    pub even: RangeInclusive<usize>,
    /// Bits covered by the trailing odd-parity bit (the last bit included).
    pub odd: RangeInclusive<usize>,
    pub facility: RangeInclusive<usize>,
    pub number: RangeInclusive<usize>,
}

impl Layout {
    /// Whether both parity bits agree with the frame.
    pub fn parity_ok(&self, bits: &Bits) -> bool {
        let ones = |range: &RangeInclusive<usize>| bits.ones(*range.start(), *range.end());
        ones(&self.even) % 2 == 0 && ones(&self.odd) % 2 == 1
    }

    /// Widths of the facility and number fields, bits.
    pub fn field_widths(&self) -> (usize, usize) {
        let width = |r: &RangeInclusive<usize>| r.end() - r.start() + 1;
        (width(&self.facility), width(&self.number))
    }
}

/// The HID formats the decoder knows.
pub const LAYOUTS: [Layout; 3] = [
    Layout {
        format: CardFormat::H10301,
        bits: 26,
        even: 0..=12,
        odd: 13..=25,
        facility: 1..=8,
        number: 9..=24,
    },
    Layout {
        format: CardFormat::H10306,
        bits: 34,
        even: 0..=16,
        odd: 17..=33,
        facility: 1..=16,
        number: 17..=32,
    },
    Layout {
        format: CardFormat::H10304,
        bits: 37,
        even: 0..=18,
        odd: 18..=36,
        facility: 1..=16,
        number: 17..=35,
    },
];

/// The layout of a format with one, `None` for raw.
pub fn layout(format: CardFormat) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.format == format)
}

/// Raw frames: shorter ones are keypad bursts or noise, longer ones do not fit a u64 number.
pub const RAW_BITS: RangeInclusive<usize> = 10..=64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Parity { format: CardFormat },
    UnsupportedLength(usize),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Parity { .. } => "parity",
            DecodeError::UnsupportedLength(_) => "unsupported_length",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Parity { format } => write!(f, "parity error in a {format} frame"),
            DecodeError::UnsupportedLength(n) => write!(f, "{n}-bit frames are not accepted"),
        }
    }
}

/// Decodes a card frame in one of the `accepted` formats. A known length with bad parity is
/// rejected, never reinterpreted as raw.
pub fn decode_card(bits: &Bits, accepted: &[CardFormat]) -> Result<CardRead, DecodeError> {
    let known = LAYOUTS.iter().find(|l| l.bits == bits.len());
    if let Some(layout) = known.filter(|l| accepted.contains(&l.format)) {
        if !layout.parity_ok(bits) {
            return Err(DecodeError::Parity {
                format: layout.format,
            });
        }
        return Ok(CardRead {
            format: layout.format,
            facility: Some(bits.field(*layout.facility.start(), *layout.facility.end()) as u32),
            number: bits.field(*layout.number.start(), *layout.number.end()),
            bit_count: bits.len() as u8,
            raw: bits.value(),
        });
    }
    if accepted.contains(&CardFormat::Raw) && RAW_BITS.contains(&bits.len()) && known.is_none() {
        return Ok(CardRead {
            format: CardFormat::Raw,
            facility: None,
            number: bits.value() as u64,
            bit_count: bits.len() as u8,
            raw: bits.value(),
        });
    }
    Err(DecodeError::UnsupportedLength(bits.len()))
}
