//! `[[card_formats]]`: Wiegand card formats a site defines by field map, besides the built-in
//! ones, and the conversion of a door's `reader.formats` into the decoder's `CardFormats`.
//!
//! ```toml
//! [[card_formats]]
//! name = "civintec42"         # what doors.reader.formats lists
//! bits = 42
//! number = "1-40"             # bit 0 is the first bit on the wire
//! parity = [
//!   { bit = 0, kind = "even", over = "1-20" },
//!   { bit = 41, kind = "odd", over = "21-40" },
//! ]
//! # facility = "1-8"          # optional
//! # bit_order = "reversed"    # or "bytes_reversed"; default "msb_first"
//! ```

use super::values::Ranged;
use super::{Config, DoorConfig};
use crate::credential::CardFormat;
use crate::wiegand::{self, BitOrder, BitRange, BitSet, CardFormats, Layout, Parity, ParityBit};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A card format defined by its field map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardFormatConfig {
    /// Lower-case letters, digits, `_` and `-`; not a built-in format's name.
    pub name: String,
    /// Frame length (10 to 128 bits; shorter frames are keypad keys).
    pub bits: Ranged<10, 128, 26>,
    /// The facility (site, company) code field, e.g. `"1-8"`; at most 32 bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<BitRange>,
    /// The card number field, e.g. `"9-24"`; at most 64 bits.
    pub number: BitRange,
    /// The parity bits; none for formats without a check (UIDs).
    #[serde(default)]
    pub parity: Vec<ParityConfig>,
    #[serde(default)]
    pub bit_order: BitOrder,
}

/// One parity bit: `bit` makes the count of ones over `over` and itself even or odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParityConfig {
    pub bit: usize,
    pub kind: Parity,
    /// Positions and ranges it covers, e.g. `"1-12"` or `"2-3,5-6,8-9"`.
    pub over: BitSet,
}

impl CardFormatConfig {
    /// The decoder's layout of this format (call after `problems` found none).
    pub fn layout(&self) -> Layout {
        Layout {
            format: CardFormat::named(&self.name),
            bits: self.bits.get() as usize,
            parity: self
                .parity
                .iter()
                .map(|p| ParityBit {
                    at: p.bit,
                    kind: p.kind,
                    covers: p.over,
                })
                .collect(),
            facility: self.facility,
            number: self.number,
            order: self.bit_order,
        }
    }

    /// What is wrong with this definition, as (field, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut report = |field: &str, message: String| problems.push((field.to_string(), message));
        let bits = self.bits.get() as usize;
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            report(
                "name",
                format!("`{}` must be lower-case letters, digits, `_` or `-`", self.name),
            );
        } else if wiegand::builtin(&CardFormat::named(&self.name)).is_some()
            || self.name == CardFormat::RAW.as_str()
        {
            report(
                "name",
                format!("`{}` is a built-in format; give yours another name", self.name),
            );
        }
        let beyond = |range: BitRange| range.to >= bits;
        if beyond(self.number) {
            report(
                "number",
                format!("`{}` runs past the frame's last bit ({})", self.number, bits - 1),
            );
        } else if self.number.width() > 64 {
            report("number", format!("`{}` is wider than 64 bits", self.number));
        }
        if let Some(facility) = self.facility {
            if beyond(facility) {
                report(
                    "facility",
                    format!("`{facility}` runs past the frame's last bit ({})", bits - 1),
                );
            } else if facility.width() > 32 {
                report("facility", format!("`{facility}` is wider than 32 bits"));
            } else if facility.set().intersects(self.number.set()) {
                report(
                    "facility",
                    format!("`{facility}` overlaps the number field `{}`", self.number),
                );
            }
        }
        let fields = self
            .facility
            .map_or(BitSet::EMPTY, BitRange::set)
            .union(self.number.set());
        let mut parity_bits = BitSet::EMPTY;
        for (i, parity) in self.parity.iter().enumerate() {
            let at = |field: &str| format!("parity[{i}].{field}");
            if parity.bit >= bits {
                report(
                    &at("bit"),
                    format!("{} is past the frame's last bit ({})", parity.bit, bits - 1),
                );
            } else if parity_bits.contains(parity.bit) {
                report(&at("bit"), format!("bit {} is already a parity bit", parity.bit));
            } else if fields.contains(parity.bit) {
                report(
                    &at("bit"),
                    format!("bit {} is inside the facility or number field", parity.bit),
                );
            }
            parity_bits = parity_bits.with(parity.bit);
            if parity.over.last().is_some_and(|last| last >= bits) {
                report(
                    &at("over"),
                    format!("`{}` runs past the frame's last bit ({})", parity.over, bits - 1),
                );
            } else if parity.over.without(BitSet::EMPTY.with(parity.bit)).is_empty() {
                report(&at("over"), "covers no bit but its own".into());
            }
        }
        if self.bit_order == BitOrder::BytesReversed && bits % 8 != 0 {
            report(
                "bit_order",
                format!("\"bytes_reversed\" needs whole bytes; {bits} bits is not a multiple of 8"),
            );
        }
        problems
    }
}

impl Config {
    /// The formats a door decodes card frames with: its `reader.formats` resolved against the
    /// built-in and the site's formats (unknown names are reported by `validate` and left out
    /// here, so a frame of theirs is refused).
    pub fn card_formats_for(&self, door: &DoorConfig) -> CardFormats {
        let defined: Vec<Layout> = self.card_formats.iter().map(|f| f.layout()).collect();
        let layouts = door
            .reader
            .formats()
            .iter()
            .filter_map(|name| {
                wiegand::builtin(name)
                    .or_else(|| defined.iter().find(|l| &l.format == name))
                    .cloned()
            })
            .collect();
        CardFormats::new(
            layouts,
            door.reader.formats().contains(&CardFormat::RAW),
            &defined,
        )
    }

    /// Every format the agent knows by name: the built-in ones and the site's.
    pub fn known_layouts(&self) -> Vec<Layout> {
        wiegand::builtin_layouts()
            .iter()
            .cloned()
            .chain(self.card_formats.iter().map(|f| f.layout()))
            .collect()
    }

    /// `[[card_formats]]` definitions, and each door's `reader.formats` against them.
    pub(super) fn validate_card_formats(&self, report: &mut impl FnMut(String, String)) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (index, format) in self.card_formats.iter().enumerate() {
            let at = |field: &str| format!("card_formats[{index}].{field}");
            if let Some(first) = names.insert(&format.name, index) {
                report(
                    at("name"),
                    format!("`{}` is already defined by card_formats[{first}]", format.name),
                );
            }
            for (field, message) in format.problems() {
                report(at(&field), message);
            }
        }
        for (index, door) in self.doors.iter().enumerate() {
            let key = format!("doors[{index}].reader.formats");
            let known = |name: &CardFormat| {
                *name == CardFormat::RAW
                    || wiegand::builtin(name).is_some()
                    || names.contains_key(name.as_str())
            };
            if let Some(unknown) = door.reader.formats().iter().find(|name| !known(name)) {
                let builtin: Vec<&str> = wiegand::builtin_layouts()
                    .iter()
                    .map(|l| l.format.as_str())
                    .collect();
                report(
                    key.clone(),
                    format!(
                        "unknown card format `{unknown}`: built in are {}, raw; others are \
                         defined under [[card_formats]]",
                        builtin.join(", ")
                    ),
                );
                continue;
            }
            let layouts = self.card_formats_for(door);
            let layouts = layouts.layouts();
            for (i, a) in layouts.iter().enumerate() {
                if let Some(b) = layouts[i + 1..].iter().find(|b| a.indistinguishable_from(b)) {
                    report(
                        key.clone(),
                        format!(
                            "`{}` and `{}` are both {} bits with the same checks (or none): no \
                             frame tells them apart; list only the one your cards use",
                            a.format, b.format, a.bits
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CardFormatConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn a_definition_becomes_its_layout() {
        let format = parse(
            "name = \"acme40\"\nbits = 40\nfacility = \"1-8\"\nnumber = \"9-38\"\n\
             parity = [{ bit = 0, kind = \"even\", over = \"1-19\" }, { bit = 39, kind = \"odd\", over = \"20-38\" }]\n\
             bit_order = \"reversed\"",
        )
        .unwrap();
        assert!(format.problems().is_empty(), "{:?}", format.problems());
        let layout = format.layout();
        assert_eq!(layout.format.as_str(), "acme40");
        assert_eq!(layout.field_widths(), (8, 30));
        assert_eq!(layout.order, BitOrder::Reversed);
        assert!(layout.unchecked_bits().is_empty());
    }

    /// Formats as a site would define them from a reader manual, decoding the manual's own
    /// example frames (CIVINTEC CN56X0B-X Reader User Manual 6.4.7 Wiegand42 and 6.4.8 Wiegand50:
    /// the data between an even parity bit over its first half and an odd one over its second),
    /// with every single-bit flip refused.
    #[test]
    fn site_formats_decode_published_frames_and_refuse_every_flip() {
        use crate::wiegand::{decode_card, Bits, DecodeError};
        let cases = [
            (
                "name = \"w42\"\nbits = 42\nnumber = \"1-40\"\nparity = [{ bit = 0, kind = \"even\", over = \"1-20\" }, { bit = 41, kind = \"odd\", over = \"21-40\" }]",
                "0 00000000 10001001 11010100 00011011 10000001 0",
                0x00_89D4_1B81u64,
            ),
            (
                "name = \"w50\"\nbits = 50\nnumber = \"1-48\"\nparity = [{ bit = 0, kind = \"even\", over = \"1-24\" }, { bit = 49, kind = \"odd\", over = \"25-48\" }]",
                "0 00000001 00000000 10001001 11010100 00011011 10000001 1",
                0x0100_89D4_1B81,
            ),
        ];
        for (definition, output, number) in cases {
            let format = parse(definition).unwrap();
            assert!(format.problems().is_empty());
            let layout = format.layout();
            assert!(layout.unchecked_bits().is_empty());
            let formats = CardFormats::new(vec![layout.clone()], false, &[]);
            let frame = Bits::from_str(&output.replace(' ', "")).unwrap();
            let card = decode_card(&frame, &formats).unwrap();
            assert_eq!(
                (card.number, card.format.as_str()),
                (number, format.name.as_str())
            );
            for i in 0..frame.len() {
                assert_eq!(
                    decode_card(&frame.flipped(i), &formats),
                    Err(DecodeError::Parity {
                        format: layout.format.clone()
                    }),
                    "{} bit {i}",
                    format.name
                );
            }
        }
    }

    #[test]
    fn bad_definitions_name_the_field() {
        for (text, field, needle) in [
            ("name = \"h10301\"\nbits = 26\nnumber = \"1-24\"", "name", "built-in"),
            ("name = \"Big\"\nbits = 26\nnumber = \"1-24\"", "name", "lower-case"),
            ("name = \"x\"\nbits = 26\nnumber = \"1-26\"", "number", "past"),
            ("name = \"x\"\nbits = 80\nnumber = \"0-79\"", "number", "64 bits"),
            (
                "name = \"x\"\nbits = 26\nfacility = \"1-9\"\nnumber = \"9-24\"",
                "facility",
                "overlaps",
            ),
            (
                "name = \"x\"\nbits = 26\nnumber = \"1-24\"\nparity = [{ bit = 3, kind = \"odd\", over = \"1-2\" }]",
                "parity[0].bit",
                "inside",
            ),
            (
                "name = \"x\"\nbits = 26\nnumber = \"1-24\"\nparity = [{ bit = 0, kind = \"odd\", over = \"1-30\" }]",
                "parity[0].over",
                "past",
            ),
            (
                "name = \"x\"\nbits = 26\nnumber = \"1-24\"\nparity = [{ bit = 0, kind = \"odd\", over = \"0\" }]",
                "parity[0].over",
                "its own",
            ),
            (
                "name = \"x\"\nbits = 26\nnumber = \"0-25\"\nbit_order = \"bytes_reversed\"",
                "bit_order",
                "multiple of 8",
            ),
        ] {
            let problems = parse(text).unwrap().problems();
            assert!(
                problems.iter().any(|(f, m)| f == field && m.contains(needle)),
                "{text}: {problems:?}"
            );
        }
        assert!(
            parse("name = \"x\"\nbits = 8\nnumber = \"0-7\"").is_err(),
            "keypad lengths"
        );
        assert!(parse("name = \"x\"\nbits = 26\nnumber = \"24-1\"").is_err());
        assert!(parse("name = \"x\"\nbits = 26\nnumber = \"1-24\"\ncolour = 1").is_err());
    }
}
