//! What a reader hands to the access decision: a decoded card or an entered PIN, and how a card
//! read becomes the credential value that DoorFlow stores.
//!
//! Pure types and functions: the Wiegand decoder produces these, `access::decide` consumes them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Wiegand card formats the decoder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardFormat {
    /// HID H10301, 26 bits: 8-bit facility, 16-bit card number, two parity bits.
    H10301,
    /// HID H10306, 34 bits: 16-bit facility, 16-bit card number, two parity bits.
    H10306,
    /// HID H10304, 37 bits: 16-bit facility, 19-bit card number, two parity bits.
    H10304,
    /// Any other bit count, taken as one unsigned number without parity.
    Raw,
}

impl CardFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CardFormat::H10301 => "h10301",
            CardFormat::H10306 => "h10306",
            CardFormat::H10304 => "h10304",
            CardFormat::Raw => "raw",
        }
    }
}

impl fmt::Display for CardFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card frame that passed its format's checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRead {
    pub format: CardFormat,
    /// Facility (site) code; `None` for raw frames.
    pub facility: Option<u32>,
    /// Card number within the facility; for raw frames the whole frame as a number.
    pub number: u64,
    /// Number of bits in the frame.
    pub bit_count: u8,
    /// The whole frame, parity bits included, as an unsigned number (first bit most significant).
    pub raw: u128,
}

/// What a person presented at a reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presented {
    Card(CardRead),
    Pin(String),
}

/// How a door turns a card read into the string that is looked up among DoorFlow credential
/// values. Installations enrol cards differently, so this is per door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardValueMapping {
    /// The card number alone, in decimal (`"1"` for facility 191 card 1). The common enrolment.
    #[default]
    Number,
    /// Facility and number joined, number zero-padded to five digits (`"19100001"`).
    FacilityNumber,
    /// The whole frame without parity stripping, in decimal (`"58589186"` for `0x37E0002`).
    FullDecimal,
}

impl CardValueMapping {
    /// The credential value this card read stands for under this mapping.
    pub fn value_of(self, card: &CardRead) -> String {
        match self {
            CardValueMapping::Number => card.number.to_string(),
            CardValueMapping::FacilityNumber => match card.facility {
                Some(facility) => format!("{facility}{:05}", card.number),
                None => card.number.to_string(),
            },
            CardValueMapping::FullDecimal => card.raw.to_string(),
        }
    }
}

/// A credential value shortened for logs: only the last two characters stay readable, so an
/// integrator can tell swipes apart without the journal holding usable card numbers or PINs.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep = if chars.len() > 4 { 2 } else { 0 };
    let hidden = chars.len() - keep;
    let mut masked = "*".repeat(hidden.max(4));
    masked.extend(&chars[hidden..]);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h10301(facility: u32, number: u64, raw: u128) -> CardRead {
        CardRead {
            format: CardFormat::H10301,
            facility: Some(facility),
            number,
            bit_count: 26,
            raw,
        }
    }

    #[test]
    fn mappings_render_the_enrolled_value() {
        let card = h10301(191, 1, 0x37E0002);
        assert_eq!(CardValueMapping::Number.value_of(&card), "1");
        assert_eq!(CardValueMapping::FacilityNumber.value_of(&card), "19100001");
        assert_eq!(CardValueMapping::FullDecimal.value_of(&card), "58589186");
    }

    #[test]
    fn raw_frames_have_no_facility_to_join() {
        let card = CardRead {
            format: CardFormat::Raw,
            facility: None,
            number: 123456,
            bit_count: 40,
            raw: 123456,
        };
        assert_eq!(CardValueMapping::FacilityNumber.value_of(&card), "123456");
    }

    #[test]
    fn mask_hides_all_but_the_last_two() {
        assert_eq!(mask("12345678"), "******78");
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask("7"), "****");
        assert_eq!(mask(""), "****");
        assert!(!mask("4242424242").contains("4242"));
    }
}
