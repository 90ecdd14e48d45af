//! Card formats as field maps: which bits of a frame are the facility code, the card number and
//! the parity bits, and which bits each parity bit covers. A format is data (`Layout`): the
//! built-in ones below and the ones a site defines in its config decode with the same code.
//!
//! Bits are numbered from 0, the first bit on the wire. Sources of the built-in layouts:
//! - parity scheme: HID Global, "Understanding Card Data Formats" (white paper, 2006);
//! - H10301 (26 bits): HID Technical Support Tech Tip #5 "The Standard 26 Bit Format"
//!   (`PAAAAAAAABBBBBBBBBBBBBBBBP`, even parity over the first 13 bits, odd over the last 13);
//! - H10306 (34 bits): 16-bit facility and number, parity over 17 + 17 bits;
//! - H10304 (37 bits): 16-bit facility, 19-bit number, even parity over bits 0-18 and odd over
//!   18-36 (they share bit 18), the card-layout table at https://www.ooaccess.com/kb/37-bit-fc/;
//! - H10302 (37 bits): the same parity as H10304 over a 35-bit number without facility (HID
//!   "Format Guidelines", hidglobal.com page 10; Nedap COMBI-BOOSTER user manual 6.3). H10302 and
//!   H10304 frames cannot be told apart: a door lists one of them;
//! - Corporate 1000 35-bit: bit 0 odd parity over the whole frame, bit 1 even parity over bits
//!   2-3, 5-6, … 32-33, bit 34 odd parity over bits 1-2, 4-5, … 31-32, company id bits 2-13, card
//!   number bits 14-33 (the masks of Proxmark3's `Pack_C1k35s`, client/src/wiegand_formats.c;
//!   company and number fields as Doppelgänger Core's format table gives them);
//! - raw UIDs of 40, 56 and 64 bits: what UID readers send, the card's 5, 7 or 8 UID bytes as
//!   they are, without parity (EM4100 IDs are 40 bits; ISO 14443 double-size UIDs 56).

use super::Bits;
use crate::credential::{CardFormat, CardRead};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::LazyLock;

/// Even or odd parity: the number of ones over the covered bits, the parity bit included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    Even,
    Odd,
}

/// A set of bit positions in a frame (0 = first bit on the wire, at most 128 bits). Written in
/// config as ranges: `"2-3,5-6,8"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BitSet(u128);

impl BitSet {
    pub const EMPTY: BitSet = BitSet(0);

    /// Bits `from..=to` (both below 128).
    pub const fn range(from: usize, to: usize) -> BitSet {
        let width = to - from + 1;
        let ones = if width >= 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        BitSet(ones << from)
    }

    /// The positions `from..=to` except `from + skip`, `from + skip + every`, … (Corporate
    /// 1000's masks cover two bits of every three).
    fn pairs(from: usize, to: usize, every: usize, skip: usize) -> BitSet {
        BitSet(
            (from..=to)
                .filter(|i| (i - from) % every != skip)
                .fold(0, |acc, i| acc | 1 << i),
        )
    }

    pub fn with(self, bit: usize) -> BitSet {
        BitSet(self.0 | 1 << bit)
    }

    pub fn union(self, other: BitSet) -> BitSet {
        BitSet(self.0 | other.0)
    }

    pub fn without(self, other: BitSet) -> BitSet {
        BitSet(self.0 & !other.0)
    }

    pub fn intersects(self, other: BitSet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn contains(self, bit: usize) -> bool {
        bit < 128 && self.0 >> bit & 1 == 1
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The highest position in the set.
    pub fn last(self) -> Option<usize> {
        (self.0 != 0).then(|| 127 - self.0.leading_zeros() as usize)
    }

    /// The positions in ascending order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..128).filter(move |&i| self.contains(i))
    }

    /// The set as inclusive ranges, ascending.
    pub fn ranges(self) -> Vec<RangeInclusive<usize>> {
        let mut ranges: Vec<RangeInclusive<usize>> = Vec::new();
        for i in self.iter() {
            match ranges.last_mut() {
                Some(last) if *last.end() + 1 == i => *last = *last.start()..=i,
                _ => ranges.push(i..=i),
            }
        }
        ranges
    }

    /// How many of these positions are set in `bits`.
    fn ones_in(self, bits: &Bits) -> u32 {
        self.iter().filter(|&i| bits.get(i)).count() as u32
    }
}

impl TryFrom<String> for BitSet {
    type Error = String;
    /// `"2-3,5-6,8"`: positions and inclusive ranges, comma-separated, each below 128.
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let mut set = BitSet::EMPTY;
        for part in text.split(',').map(str::trim) {
            let range = BitRange::try_from(part.to_string())?;
            set = set.union(BitSet::range(range.from, range.to));
        }
        Ok(set)
    }
}

impl From<BitSet> for String {
    fn from(set: BitSet) -> String {
        set.to_string()
    }
}

impl fmt::Display for BitSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges()
            .into_iter()
            .map(|r| BitRange::new(*r.start(), *r.end()).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Consecutive bit positions `from..=to` (a field), written `"9-24"` (or `"5"` for one bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BitRange {
    pub from: usize,
    pub to: usize,
}

impl BitRange {
    pub const fn new(from: usize, to: usize) -> BitRange {
        BitRange { from, to }
    }

    pub fn width(self) -> usize {
        self.to - self.from + 1
    }

    pub fn set(self) -> BitSet {
        BitSet::range(self.from, self.to)
    }
}

impl TryFrom<String> for BitRange {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let number = |word: &str| {
            word.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n < 128)
                .ok_or_else(|| format!("`{}` is not a bit position (0 to 127)", word.trim()))
        };
        let (from, to) = match text.split_once('-') {
            Some((from, to)) => (number(from)?, number(to)?),
            None => {
                let bit = number(&text)?;
                (bit, bit)
            }
        };
        if from > to {
            return Err(format!("`{text}` runs backwards: write the lower bit first"));
        }
        Ok(BitRange { from, to })
    }
}

impl From<BitRange> for String {
    fn from(range: BitRange) -> String {
        range.to_string()
    }
}

impl fmt::Display for BitRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

/// One parity bit: the bit `at` makes the number of ones over `covers` and itself even or odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParityBit {
    pub at: usize,
    pub kind: Parity,
    /// The bits it covers (its own position may be included or not: it always counts).
    pub covers: BitSet,
}

impl ParityBit {
    const fn new(at: usize, kind: Parity, covers: BitSet) -> ParityBit {
        ParityBit { at, kind, covers }
    }

    /// Every bit this check counts, its own included.
    pub fn checked(&self) -> BitSet {
        self.covers.with(self.at)
    }

    /// Whether the frame (in the format's own bit order) satisfies this check.
    pub fn holds(&self, bits: &Bits) -> bool {
        let ones = self.checked().ones_in(bits);
        match self.kind {
            Parity::Even => ones % 2 == 0,
            Parity::Odd => ones % 2 == 1,
        }
    }
}

/// The order a reader sends a format's bits in, relative to the published layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BitOrder {
    /// As published: the first bit on the wire is bit 0.
    #[default]
    MsbFirst,
    /// The whole frame backwards: the last bit on the wire is bit 0.
    Reversed,
    /// Whole bytes in reverse order, the bits of each byte as published (UID readers that send
    /// a UID's bytes last byte first). Only for lengths that are a multiple of 8.
    BytesReversed,
}

impl BitOrder {
    /// `bits` as received turned into the layout's order (each order is its own inverse, so the
    /// same call turns a layout-ordered frame into what a reader sends).
    pub fn apply(self, bits: &Bits) -> Bits {
        let len = bits.len();
        let source = |i: usize| match self {
            BitOrder::MsbFirst => i,
            BitOrder::Reversed => len - 1 - i,
            BitOrder::BytesReversed => (len / 8 - 1 - i / 8) * 8 + i % 8,
        };
        let value = (0..len).fold(0u128, |acc, i| (acc << 1) | bits.get(source(i)) as u128);
        Bits::from_value(value, len as u8)
    }
}

/// Where a format keeps its fields, and how its frames are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub format: CardFormat,
    /// Frame length, bits.
    pub bits: usize,
    pub parity: Vec<ParityBit>,
    /// The facility (site, company) code; `None` for formats without one. At most 32 bits.
    pub facility: Option<BitRange>,
    /// The card number. At most 64 bits.
    pub number: BitRange,
    pub order: BitOrder,
}

impl Layout {
    /// The frame in this layout's bit order (`bits` as received).
    pub fn ordered(&self, bits: &Bits) -> Bits {
        self.order.apply(bits)
    }

    /// Whether every parity check holds for `ordered` (a frame in this layout's order).
    pub fn parity_ok(&self, ordered: &Bits) -> bool {
        self.parity.iter().all(|p| p.holds(ordered))
    }

    /// Widths of the facility (0 without one) and number fields, bits.
    pub fn field_widths(&self) -> (usize, usize) {
        (self.facility.map_or(0, BitRange::width), self.number.width())
    }

    /// The parity bits' positions.
    pub fn parity_positions(&self) -> BitSet {
        self.parity.iter().fold(BitSet::EMPTY, |set, p| set.with(p.at))
    }

    /// Positions no parity bit covers: a misread there is another valid frame.
    pub fn unchecked_bits(&self) -> BitSet {
        let all = BitSet::range(0, self.bits - 1);
        self.parity.iter().fold(all, |left, p| left.without(p.checked()))
    }

    /// Whether a frame of this format passes exactly the checks a frame of `other` passes (same
    /// length, the same checks, or no check at all on either): no frame tells them apart.
    pub fn indistinguishable_from(&self, other: &Layout) -> bool {
        if self.bits != other.bits {
            return false;
        }
        if self.parity.is_empty() || other.parity.is_empty() {
            return true;
        }
        let checks = |layout: &Layout| {
            let mut checks: Vec<(BitSet, Parity)> =
                layout.parity.iter().map(|p| (p.checked(), p.kind)).collect();
            checks.sort_by_key(|(set, kind)| (set.0, *kind == Parity::Odd));
            checks
        };
        self.order == other.order && checks(self) == checks(other)
    }

    /// The card in `ordered` (already checked), as read.
    fn read(&self, ordered: &Bits) -> CardRead {
        let field = |range: BitRange| ordered.field(range.from, range.to);
        let parity = self.parity_positions();
        let data = (0..self.bits)
            .filter(|&i| !parity.contains(i))
            .fold(0u128, |acc, i| (acc << 1) | ordered.get(i) as u128);
        CardRead {
            format: self.format.clone(),
            facility: self.facility.map(|range| field(range) as u32),
            number: field(self.number),
            bit_count: self.bits as u8,
            raw: ordered.value(),
            data,
        }
    }
}

/// The formats the agent knows without config (their sources are in the module docs).
pub fn builtin_layouts() -> &'static [Layout] {
    static BUILTIN: LazyLock<Vec<Layout>> = LazyLock::new(|| {
        use Parity::{Even, Odd};
        let hid = |format: CardFormat, bits: usize, facility: Option<BitRange>, number: BitRange| {
            // The HID two-bit scheme: even parity first over the first half, odd parity last
            // over the second half (the halves share the middle bit when `bits` is odd).
            Layout {
                format,
                bits,
                parity: vec![
                    ParityBit::new(0, Even, BitSet::range(1, (bits - 1) / 2)),
                    ParityBit::new(bits - 1, Odd, BitSet::range(bits / 2, bits - 2)),
                ],
                facility,
                number,
                order: BitOrder::MsbFirst,
            }
        };
        let uid = |format: CardFormat, bits: usize| Layout {
            format,
            bits,
            parity: vec![],
            facility: None,
            number: BitRange::new(0, bits - 1),
            order: BitOrder::MsbFirst,
        };
        vec![
            hid(
                CardFormat::H10301,
                26,
                Some(BitRange::new(1, 8)),
                BitRange::new(9, 24),
            ),
            hid(
                CardFormat::H10306,
                34,
                Some(BitRange::new(1, 16)),
                BitRange::new(17, 32),
            ),
            hid(
                CardFormat::H10304,
                37,
                Some(BitRange::new(1, 16)),
                BitRange::new(17, 35),
            ),
            hid(CardFormat::H10302, 37, None, BitRange::new(1, 35)),
            Layout {
                format: CardFormat::CORPORATE_1000_35,
                bits: 35,
                parity: vec![
                    // Checked in this order when encoding: bit 34 covers bit 1, bit 0 covers all.
                    ParityBit::new(1, Even, BitSet::pairs(2, 33, 3, 2)),
                    ParityBit::new(34, Odd, BitSet::pairs(1, 32, 3, 2)),
                    ParityBit::new(0, Odd, BitSet::range(1, 34)),
                ],
                facility: Some(BitRange::new(2, 13)),
                number: BitRange::new(14, 33),
                order: BitOrder::MsbFirst,
            },
            uid(CardFormat::UID40, 40),
            uid(CardFormat::UID56, 56),
            uid(CardFormat::UID64, 64),
        ]
    });
    &BUILTIN
}

/// The built-in layout of a format, `None` for `raw` and formats defined in config.
pub fn builtin(format: &CardFormat) -> Option<&'static Layout> {
    builtin_layouts().iter().find(|l| &l.format == format)
}

/// Raw frames: shorter ones are keypad bursts or noise, longer ones do not fit a u64 number.
pub const RAW_BITS: RangeInclusive<usize> = 10..=64;

/// What one door decodes card frames with: its formats' layouts, whether it takes `raw`
/// frames, and the lengths never taken as raw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CardFormats {
    layouts: Vec<Layout>,
    raw: bool,
    /// Bit `n` set: `n`-bit frames belong to a parity-checked format the agent knows (built in
    /// or defined in config), so a frame of that length that fails its checks is refused, never
    /// reread as raw.
    guarded_lengths: u128,
}

impl CardFormats {
    /// The door's `layouts`, `raw` if it lists raw, and the lengths of every parity-checked
    /// format in `known` (the built-in ones are always included).
    pub fn new(layouts: Vec<Layout>, raw: bool, known: &[Layout]) -> CardFormats {
        let guarded_lengths = builtin_layouts()
            .iter()
            .chain(known)
            .chain(&layouts)
            .filter(|l| !l.parity.is_empty() && l.bits < 128)
            .fold(0u128, |acc, l| acc | 1 << l.bits);
        CardFormats {
            layouts,
            raw,
            guarded_lengths,
        }
    }

    /// Built-in formats only (unknown names are left out).
    pub fn builtin(names: &[CardFormat]) -> CardFormats {
        let layouts = names.iter().filter_map(builtin).cloned().collect();
        CardFormats::new(layouts, names.contains(&CardFormat::RAW), &[])
    }

    pub fn layouts(&self) -> &[Layout] {
        &self.layouts
    }

    fn guarded(&self, len: usize) -> bool {
        len < 128 && self.guarded_lengths >> len & 1 == 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A length the door has formats for, but no format's checks hold.
    Parity {
        format: CardFormat,
    },
    /// The frame passes the checks of several of the door's formats: refused rather than guessed.
    Ambiguous {
        formats: Vec<CardFormat>,
    },
    UnsupportedLength(usize),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Parity { .. } => "parity",
            DecodeError::Ambiguous { .. } => "ambiguous_format",
            DecodeError::UnsupportedLength(_) => "unsupported_length",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Parity { format } => write!(f, "parity error in a {format} frame"),
            DecodeError::Ambiguous { formats } => {
                let names: Vec<&str> = formats.iter().map(CardFormat::as_str).collect();
                write!(f, "the frame fits several formats ({})", names.join(", "))
            }
            DecodeError::UnsupportedLength(n) => write!(f, "{n}-bit frames are not accepted"),
        }
    }
}

/// Decodes a card frame with a door's formats. The formats of the frame's length are tried; the
/// one whose parity checks hold is the card. None holding is a parity error and several are
/// ambiguous: both refused, never reinterpreted as raw.
pub fn decode_card(bits: &Bits, formats: &CardFormats) -> Result<CardRead, DecodeError> {
    let candidates: Vec<&Layout> = formats.layouts.iter().filter(|l| l.bits == bits.len()).collect();
    if let Some(first) = candidates.first() {
        let passing: Vec<(&Layout, Bits)> = candidates
            .iter()
            .map(|l| (*l, l.ordered(bits)))
            .filter(|(l, ordered)| l.parity_ok(ordered))
            .collect();
        return match passing.as_slice() {
            [] => Err(DecodeError::Parity {
                format: first.format.clone(),
            }),
            [(layout, ordered)] => Ok(layout.read(ordered)),
            several => Err(DecodeError::Ambiguous {
                formats: several.iter().map(|(l, _)| l.format.clone()).collect(),
            }),
        };
    }
    if formats.raw && RAW_BITS.contains(&bits.len()) && !formats.guarded(bits.len()) {
        return Ok(CardRead {
            format: CardFormat::RAW,
            facility: None,
            number: bits.value() as u64,
            bit_count: bits.len() as u8,
            raw: bits.value(),
            data: bits.value(),
        });
    }
    Err(DecodeError::UnsupportedLength(bits.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_sets_and_ranges_parse_and_print() {
        let set = BitSet::try_from("2-3, 5-6,8".to_string()).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [2, 3, 5, 6, 8]);
        assert_eq!(set.to_string(), "2-3,5-6,8");
        assert_eq!(set.last(), Some(8));
        for bad in ["", "3-2", "x", "1-128", "-4"] {
            assert!(BitSet::try_from(bad.to_string()).is_err(), "`{bad}`");
        }
        assert_eq!(BitRange::try_from("9-24".to_string()).unwrap().width(), 16);
        assert_eq!(BitSet::range(0, 127).iter().count(), 128);
    }

    #[test]
    fn orders_are_their_own_inverse() {
        let frame = Bits::from_str("1100000010101010").unwrap();
        assert_eq!(BitOrder::Reversed.apply(&frame).to_string(), "0101010100000011");
        assert_eq!(
            BitOrder::BytesReversed.apply(&frame).to_string(),
            "1010101011000000"
        );
        for order in [BitOrder::MsbFirst, BitOrder::Reversed, BitOrder::BytesReversed] {
            assert_eq!(order.apply(&order.apply(&frame)), frame, "{order:?}");
        }
    }

    /// The Corporate 1000 masks as written out in published descriptions: bit 1 even over
    /// 2-3, 5-6, … 32-33; bit 34 odd over 1-2, 4-5, … 31-32.
    #[test]
    fn corporate_1000_masks_are_the_published_ones() {
        let layout = builtin(&CardFormat::CORPORATE_1000_35).unwrap();
        let even = layout.parity.iter().find(|p| p.at == 1).unwrap();
        let odd = layout.parity.iter().find(|p| p.at == 34).unwrap();
        assert_eq!(
            even.covers.to_string(),
            "2-3,5-6,8-9,11-12,14-15,17-18,20-21,23-24,26-27,29-30,32-33"
        );
        assert_eq!(
            odd.covers.to_string(),
            "1-2,4-5,7-8,10-11,13-14,16-17,19-20,22-23,25-26,28-29,31-32"
        );
        assert!(layout.unchecked_bits().is_empty());
    }

    #[test]
    fn h10302_and_h10304_cannot_be_told_apart_and_uids_share_with_nothing() {
        let h10302 = builtin(&CardFormat::H10302).unwrap();
        let h10304 = builtin(&CardFormat::H10304).unwrap();
        let h10306 = builtin(&CardFormat::H10306).unwrap();
        assert!(h10302.indistinguishable_from(h10304));
        assert!(!h10302.indistinguishable_from(h10306));
        let uid40 = builtin(&CardFormat::UID40).unwrap();
        let mut parity40 = h10302.clone();
        parity40.bits = 40;
        assert!(uid40.indistinguishable_from(&parity40));
        assert_eq!(uid40.unchecked_bits(), BitSet::range(0, 39));
    }
}
