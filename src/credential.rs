//! What a reader hands to the access decision: a decoded card or an entered PIN, and how a card
//! read becomes the credential value that DoorFlow stores.
//!
//! Pure types and functions: the Wiegand decoder produces these, `access::decide` consumes them.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// A card format's name, as `doors.reader.formats` lists it: one of the built-in formats
/// (`wiegand::card::builtin_layouts`: HID H10301, H10306, H10304, H10302, Corporate 1000 35-bit,
/// raw UIDs of 40, 56 and 64 bits), `raw`, or a format the site defined under `[[card_formats]]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CardFormat(Cow<'static, str>);

impl CardFormat {
    /// HID H10301, 26 bits: 8-bit facility, 16-bit card number, two parity bits.
    pub const H10301: CardFormat = CardFormat::builtin("h10301");
    /// HID H10306, 34 bits: 16-bit facility, 16-bit card number, two parity bits.
    pub const H10306: CardFormat = CardFormat::builtin("h10306");
    /// HID H10304, 37 bits: 16-bit facility, 19-bit card number, two parity bits.
    pub const H10304: CardFormat = CardFormat::builtin("h10304");
    /// HID H10302, 37 bits: a 35-bit card number without facility, two parity bits.
    pub const H10302: CardFormat = CardFormat::builtin("h10302");
    /// HID Corporate 1000, 35 bits: 12-bit company id, 20-bit card number, three parity bits.
    pub const CORPORATE_1000_35: CardFormat = CardFormat::builtin("corporate1000_35");
    /// A reader that sends a card's UID as it is: 40 bits (5-byte UIDs, EM4100), 56 bits (7-byte
    /// ISO 14443 UIDs), 64 bits (8-byte UIDs). No parity: the whole frame is the number.
    pub const UID40: CardFormat = CardFormat::builtin("uid40");
    pub const UID56: CardFormat = CardFormat::builtin("uid56");
    pub const UID64: CardFormat = CardFormat::builtin("uid64");
    /// Any other bit count (10 to 64) that no parity-checked format has, taken as one unsigned
    /// number without parity.
    pub const RAW: CardFormat = CardFormat::builtin("raw");

    const fn builtin(name: &'static str) -> CardFormat {
        CardFormat(Cow::Borrowed(name))
    }

    /// A format defined in the config (`[[card_formats]] name`).
    pub fn named(name: &str) -> CardFormat {
        CardFormat(Cow::Owned(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
    /// The whole frame, parity bits included, as an unsigned number (first bit most significant;
    /// after the format's bit order is applied).
    pub raw: u128,
    /// The frame without its parity bits, as an unsigned number (the whole frame for formats
    /// without parity): a 34-bit H10306 card's 32 data bits, a 37-bit card's 35.
    pub data: u128,
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
    /// The frame's data bits (parity bits taken out), in decimal: 34-bit cards enrolled by their
    /// 32-bit number, 37-bit cards by their 35-bit number (`"1"` for H10301 facility 0 card 1).
    DataBits,
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
            CardValueMapping::DataBits => card.data.to_string(),
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
            data: (raw >> 1) & 0xFF_FFFF,
        }
    }

    #[test]
    fn mappings_render_the_enrolled_value() {
        let card = h10301(191, 1, 0x37E0002);
        assert_eq!(CardValueMapping::Number.value_of(&card), "1");
        assert_eq!(CardValueMapping::FacilityNumber.value_of(&card), "19100001");
        assert_eq!(CardValueMapping::FullDecimal.value_of(&card), "58589186");
        // 0x37E0002 without its first and last bit: facility 191 and card 1 as one 24-bit number.
        assert_eq!(
            CardValueMapping::DataBits.value_of(&card),
            (191u32 << 16 | 1).to_string()
        );
    }

    #[test]
    fn raw_frames_have_no_facility_to_join() {
        let card = CardRead {
            format: CardFormat::RAW,
            facility: None,
            number: 123456,
            bit_count: 40,
            raw: 123456,
            data: 123456,
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
