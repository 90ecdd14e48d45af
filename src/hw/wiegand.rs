//! Wiegand decoding as pure functions over (line, edge, kernel timestamp): frame assembly with a
//! silence timeout and noise rejection, HID card formats with parity, keypad PIN bursts, and the
//! inverse (encoding and edge generation) for the mock backend and tests.
//!
//! Lines idle high; a bit is a short low pulse (20–100 µs) on D0 for 0 or D1 for 1, bits 0.2–20 ms
//! apart. A bit counts at its falling edge. Anything odd rejects the whole frame: a misread card
//! must never become someone else's card.

use crate::credential::{CardFormat, CardRead, Presented};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WiegandLine {
    D0,
    D1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// High → low: a pulse starts (the bit).
    Falling,
    /// Low → high: the pulse ends.
    Rising,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub line: WiegandLine,
    pub kind: EdgeKind,
    pub timestamp_ns: u64,
}

/// Up to 128 bits, first bit most significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bits {
    value: u128,
    len: u8,
}

pub const MAX_BITS: usize = 128;

impl Bits {
    pub fn new() -> Bits {
        Bits::default()
    }

    /// Parses a string of `0` and `1` (1 to 128 of them).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Option<Bits> {
        if text.is_empty() || text.len() > MAX_BITS {
            return None;
        }
        let mut bits = Bits::new();
        for c in text.chars() {
            match c {
                '0' => bits.push(false),
                '1' => bits.push(true),
                _ => return None,
            }
        }
        Some(bits)
    }

    /// The low `len` bits of `value`, most significant first.
    pub fn from_value(value: u128, len: u8) -> Bits {
        let mask = if len as usize >= MAX_BITS {
            u128::MAX
        } else {
            (1u128 << len) - 1
        };
        Bits {
            value: value & mask,
            len: len.min(MAX_BITS as u8),
        }
    }

    fn push(&mut self, bit: bool) {
        self.value = (self.value << 1) | bit as u128;
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`, counted from the first (most significant) bit.
    pub fn get(&self, i: usize) -> bool {
        i < self.len() && (self.value >> (self.len() - 1 - i)) & 1 == 1
    }

    pub fn value(&self) -> u128 {
        self.value
    }

    /// Bits `from..=to` as a number.
    fn field(&self, from: usize, to: usize) -> u64 {
        (from..=to).fold(0u64, |acc, i| (acc << 1) | self.get(i) as u64)
    }

    fn ones(&self, from: usize, to: usize) -> u32 {
        (from..=to).filter(|&i| self.get(i)).count() as u32
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (0..self.len()).try_for_each(|i| f.write_str(if self.get(i) { "1" } else { "0" }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Silence that ends a frame (the standard allows up to 20 ms between bits).
    pub frame_gap_ns: u64,
    /// Falling edges closer than this are noise, not bits.
    pub min_bit_interval_ns: u64,
    pub max_bits: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            frame_gap_ns: 30_000_000,
            min_bit_interval_ns: 200_000,
            max_bits: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub bits: Bits,
    pub first_edge_ns: u64,
    pub last_edge_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    PulseTooClose {
        bits: usize,
    },
    BothLinesLow {
        bits: usize,
    },
    TooManyBits {
        bits: usize,
    },
    TimeWentBackwards {
        bits: usize,
    },
    /// The kernel dropped edges (its event sequence numbers skipped) in or just before the
    /// frame.
    EdgesLost {
        bits: usize,
    },
}

impl FrameError {
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::PulseTooClose { .. } => "pulse_too_close",
            FrameError::BothLinesLow { .. } => "both_lines_low",
            FrameError::TooManyBits { .. } => "too_many_bits",
            FrameError::TimeWentBackwards { .. } => "time_went_backwards",
            FrameError::EdgesLost { .. } => "edges_lost",
        }
    }
}

pub type FrameOutcome = Result<Frame, FrameError>;

/// Assembles frames from edges. Pure: time only comes in with the edges and `poll`.
#[derive(Debug, Clone)]
pub struct WiegandDecoder {
    config: DecoderConfig,
    bits: Bits,
    first_edge_ns: u64,
    last_edge_ns: Option<u64>,
    last_fall_ns: Option<u64>,
    low: [bool; 2],
    error: Option<FrameError>,
    /// Edges were lost before the next edge: the frame it belongs to is rejected.
    lost_before_next: bool,
}

impl WiegandDecoder {
    pub fn new(config: DecoderConfig) -> WiegandDecoder {
        WiegandDecoder {
            config: DecoderConfig {
                max_bits: config.max_bits.min(MAX_BITS),
                ..config
            },
            bits: Bits::new(),
            first_edge_ns: 0,
            last_edge_ns: None,
            last_fall_ns: None,
            low: [false; 2],
            error: None,
            lost_before_next: false,
        }
    }

    /// The source lost edges (the kernel's event buffer overflowed) between the last edge fed
    /// and the next: the frame in progress and the frame of the next edge are rejected with
    /// `edges_lost`, since the missing edges may belong to either.
    pub fn edges_lost(&mut self) {
        if self.last_edge_ns.is_some() {
            self.fail(FrameError::EdgesLost {
                bits: self.bits.len(),
            });
        }
        self.lost_before_next = true;
    }

    /// Feeds one edge. Returns the previous frame if this edge came after the frame gap.
    pub fn push(&mut self, edge: Edge) -> Option<FrameOutcome> {
        let finished = match self.last_edge_ns {
            Some(last)
                if edge.timestamp_ns >= last && edge.timestamp_ns - last >= self.config.frame_gap_ns =>
            {
                self.finish()
            }
            _ => None,
        };
        self.accept(edge);
        finished
    }

    /// Completes the current frame once `frame_gap` of silence has passed at `now_ns`.
    pub fn poll(&mut self, now_ns: u64) -> Option<FrameOutcome> {
        let last = self.last_edge_ns?;
        (now_ns.saturating_sub(last) >= self.config.frame_gap_ns)
            .then(|| self.finish())
            .flatten()
    }

    /// When `poll` should next be called, while a frame is open.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.last_edge_ns
            .map(|last| last.saturating_add(self.config.frame_gap_ns))
    }

    fn accept(&mut self, edge: Edge) {
        let index = match edge.line {
            WiegandLine::D0 => 0,
            WiegandLine::D1 => 1,
        };
        if self.last_edge_ns.is_none() {
            self.first_edge_ns = edge.timestamp_ns;
        }
        if std::mem::take(&mut self.lost_before_next) {
            self.fail(FrameError::EdgesLost {
                bits: self.bits.len(),
            });
        }
        if self.last_edge_ns.is_some_and(|last| edge.timestamp_ns < last) {
            self.fail(FrameError::TimeWentBackwards {
                bits: self.bits.len(),
            });
        }
        self.last_edge_ns = Some(
            self.last_edge_ns
                .map_or(edge.timestamp_ns, |l| l.max(edge.timestamp_ns)),
        );
        match edge.kind {
            EdgeKind::Rising => self.low[index] = false,
            EdgeKind::Falling => {
                let bits = self.bits.len();
                if self.low[1 - index] {
                    self.fail(FrameError::BothLinesLow { bits });
                }
                if self
                    .last_fall_ns
                    .is_some_and(|f| edge.timestamp_ns.saturating_sub(f) < self.config.min_bit_interval_ns)
                {
                    self.fail(FrameError::PulseTooClose { bits });
                }
                self.low[index] = true;
                self.last_fall_ns = Some(edge.timestamp_ns);
                if bits >= self.config.max_bits {
                    self.fail(FrameError::TooManyBits { bits: bits + 1 });
                } else if self.error.is_none() {
                    self.bits.push(index == 1);
                }
            }
        }
    }

    fn fail(&mut self, error: FrameError) {
        self.error.get_or_insert(error);
    }

    fn finish(&mut self) -> Option<FrameOutcome> {
        let last = self.last_edge_ns.take()?;
        let outcome = match self.error.take() {
            Some(error) => Err(error),
            None if self.bits.is_empty() => {
                self.reset();
                return None; // only rising edges (a line settling): nothing was sent
            }
            None => Ok(Frame {
                bits: self.bits,
                first_edge_ns: self.first_edge_ns,
                last_edge_ns: last,
            }),
        };
        self.reset();
        Some(outcome)
    }

    fn reset(&mut self) {
        self.bits = Bits::new();
        self.last_edge_ns = None;
        self.last_fall_ns = None;
        self.low = [false; 2];
        self.error = None;
    }
}

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

/// Layout of a HID format: total bits, even-parity range, odd-parity range, facility and
/// number fields (inclusive bit indexes).
struct Layout {
    format: CardFormat,
    bits: usize,
    even: (usize, usize),
    odd: (usize, usize),
    facility: (usize, usize),
    number: (usize, usize),
}

const LAYOUTS: [Layout; 3] = [
    Layout {
        format: CardFormat::H10301,
        bits: 26,
        even: (1, 12),
        odd: (13, 24),
        facility: (1, 8),
        number: (9, 24),
    },
    Layout {
        format: CardFormat::H10306,
        bits: 34,
        even: (1, 16),
        odd: (17, 32),
        facility: (1, 16),
        number: (17, 32),
    },
    Layout {
        format: CardFormat::H10304,
        bits: 37,
        even: (1, 18),
        odd: (18, 35),
        facility: (1, 16),
        number: (17, 35),
    },
];

/// Raw frames: shorter ones are keypad bursts or noise, longer ones do not fit a u64 number.
const RAW_BITS: std::ops::RangeInclusive<usize> = 10..=64;

/// Decodes a card frame in one of the `accepted` formats. A known length with bad parity is
/// rejected, never reinterpreted as raw.
pub fn decode_card(bits: &Bits, accepted: &[CardFormat]) -> Result<CardRead, DecodeError> {
    if let Some(layout) = LAYOUTS.iter().find(|l| l.bits == bits.len()) {
        if accepted.contains(&layout.format) {
            let even_ok = (bits.ones(layout.even.0, layout.even.1) + bits.get(0) as u32) % 2 == 0;
            let last = layout.bits - 1;
            let odd_ok = (bits.ones(layout.odd.0, layout.odd.1) + bits.get(last) as u32) % 2 == 1;
            if !(even_ok && odd_ok) {
                return Err(DecodeError::Parity {
                    format: layout.format,
                });
            }
            return Ok(CardRead {
                format: layout.format,
                facility: Some(bits.field(layout.facility.0, layout.facility.1) as u32),
                number: bits.field(layout.number.0, layout.number.1),
                bit_count: bits.len() as u8,
                raw: bits.value(),
            });
        }
    }
    let known_length = LAYOUTS.iter().any(|l| l.bits == bits.len());
    if accepted.contains(&CardFormat::Raw) && RAW_BITS.contains(&bits.len()) && !known_length {
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

/// Builds a card frame with correct parity.
pub fn encode_card(format: CardFormat, facility: u32, number: u64) -> Result<Bits, EncodeError> {
    let layout = LAYOUTS
        .iter()
        .find(|l| l.format == format)
        .ok_or(EncodeError::NotEncodable(format))?;
    let width = |(from, to): (usize, usize)| to - from + 1;
    let max = |w: usize| (1u64 << w) - 1;
    let (fw, nw) = (width(layout.facility), width(layout.number));
    if facility as u64 > max(fw) {
        return Err(EncodeError::OutOfRange {
            format,
            field: "facility",
            max: max(fw),
        });
    }
    if number > max(nw) {
        return Err(EncodeError::OutOfRange {
            format,
            field: "number",
            max: max(nw),
        });
    }
    let payload = ((facility as u128) << nw) | number as u128;
    // Parity bits as zero first, then set them from the payload.
    let mut bits = Bits::from_value(payload << 1, layout.bits as u8);
    if bits.ones(layout.even.0, layout.even.1) % 2 == 1 {
        bits.value |= 1 << (layout.bits - 1);
    }
    if bits.ones(layout.odd.0, layout.odd.1) % 2 == 0 {
        bits.value |= 1;
    }
    Ok(bits)
}

/// A keypad key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Digit(u8),
    /// `*`: clears the entry.
    Clear,
    /// `#`: submits the entry.
    Enter,
}

impl Key {
    pub fn from_char(c: char) -> Option<Key> {
        match c {
            '0'..='9' => Some(Key::Digit(c as u8 - b'0')),
            '*' => Some(Key::Clear),
            '#' => Some(Key::Enter),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            Key::Digit(d) => d,
            Key::Clear => 10,
            Key::Enter => 11,
        }
    }

    fn from_code(code: u8) -> Option<Key> {
        match code {
            0..=9 => Some(Key::Digit(code)),
            10 => Some(Key::Clear),
            11 => Some(Key::Enter),
            _ => None,
        }
    }
}

/// A 4-bit burst (the key code) or an 8-bit burst (code, then its complement).
pub fn decode_key(bits: &Bits) -> Option<Key> {
    match bits.len() {
        4 => Key::from_code(bits.value() as u8),
        8 => {
            let (high, low) = ((bits.value() >> 4) as u8, (bits.value() & 0xF) as u8);
            (high ^ low == 0xF).then(|| Key::from_code(high)).flatten()
        }
        _ => None,
    }
}

pub fn encode_key(key: Key, eight_bit: bool) -> Bits {
    let code = key.code() as u128;
    if eight_bit {
        Bits::from_value((code << 4) | (!code & 0xF), 8)
    } else {
        Bits::from_value(code, 4)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinError {
    TooLong,
    Empty,
}

impl PinError {
    pub fn reason(&self) -> &'static str {
        match self {
            PinError::TooLong => "pin_too_long",
            PinError::Empty => "pin_empty",
        }
    }
}

/// Collects keypad digits into a PIN: `#` submits, `*` clears, a pause clears stale digits.
#[derive(Debug, Clone)]
pub struct PinEntry {
    digits: String,
    last_key_ns: Option<u64>,
    timeout_ns: u64,
    max_len: usize,
    overflowed: bool,
}

impl Default for PinEntry {
    fn default() -> Self {
        PinEntry::new(10_000_000_000, 12)
    }
}

impl PinEntry {
    pub fn new(timeout_ns: u64, max_len: usize) -> PinEntry {
        PinEntry {
            digits: String::new(),
            last_key_ns: None,
            timeout_ns,
            max_len,
            overflowed: false,
        }
    }

    /// Returns a submitted PIN (or why it was refused) when `#` is pressed.
    pub fn push_key(&mut self, key: Key, now_ns: u64) -> Option<Result<Presented, PinError>> {
        self.poll(now_ns);
        self.last_key_ns = Some(now_ns);
        match key {
            Key::Digit(d) => {
                if self.digits.len() >= self.max_len {
                    self.overflowed = true;
                } else {
                    self.digits.push((b'0' + d) as char);
                }
                None
            }
            Key::Clear => {
                self.clear();
                None
            }
            Key::Enter => {
                let outcome = if self.overflowed {
                    Err(PinError::TooLong)
                } else if self.digits.is_empty() {
                    Err(PinError::Empty)
                } else {
                    Ok(Presented::Pin(std::mem::take(&mut self.digits)))
                };
                self.clear();
                Some(outcome)
            }
        }
    }

    /// Drops digits typed more than the timeout ago.
    pub fn poll(&mut self, now_ns: u64) {
        if self
            .last_key_ns
            .is_some_and(|last| now_ns.saturating_sub(last) >= self.timeout_ns)
        {
            self.clear();
        }
    }

    pub fn deadline_ns(&self) -> Option<u64> {
        self.last_key_ns.map(|last| last.saturating_add(self.timeout_ns))
    }

    fn clear(&mut self) {
        self.digits.clear();
        self.overflowed = false;
        self.last_key_ns = None;
    }
}

/// Pulse timing for generated edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulseTiming {
    pub pulse_width_ns: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [CardFormat; 4] = [
        CardFormat::H10301,
        CardFormat::H10306,
        CardFormat::H10304,
        CardFormat::Raw,
    ];
    const HID: [CardFormat; 3] = [CardFormat::H10301, CardFormat::H10306, CardFormat::H10304];

    /// Runs edges through a decoder and returns every frame outcome.
    fn decode_edges(edges: &[Edge]) -> Vec<FrameOutcome> {
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        let mut out: Vec<FrameOutcome> = edges.iter().filter_map(|e| decoder.push(*e)).collect();
        let end = edges.last().map_or(0, |e| e.timestamp_ns) + 1_000_000_000;
        out.extend(decoder.poll(end));
        out
    }

    #[test]
    fn h10301_vector_facility_191_card_1() {
        let bits = Bits::from_value(0x37E0002, 26);
        assert_eq!(bits.to_string(), "11011111100000000000000010");
        let card = decode_card(&bits, &HID).unwrap();
        assert_eq!(
            (card.format, card.facility, card.number),
            (CardFormat::H10301, Some(191), 1)
        );
        assert_eq!(encode_card(CardFormat::H10301, 191, 1).unwrap(), bits);
    }

    #[test]
    fn flipping_any_bit_of_the_vector_never_yields_the_same_card() {
        let good = Bits::from_value(0x37E0002, 26);
        for i in 0..26 {
            let flipped = Bits::from_value(good.value() ^ (1 << (25 - i)), 26);
            match decode_card(&flipped, &ALL) {
                Err(DecodeError::Parity { .. }) => {}
                other => panic!("bit {i} flipped decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn each_format_roundtrips_through_edges_and_decoder() {
        for (format, facility, number) in [
            (CardFormat::H10301, 12, 34567),
            (CardFormat::H10306, 65535, 1),
            (CardFormat::H10304, 4321, 524287),
        ] {
            let bits = encode_card(format, facility, number).unwrap();
            let frames = decode_edges(&edges_for(&bits, 1_000, &PulseTiming::default()));
            assert_eq!(frames.len(), 1);
            let frame = frames[0].unwrap();
            let card = decode_card(&frame.bits, &HID).unwrap();
            assert_eq!(
                (card.format, card.facility, card.number),
                (format, Some(facility), number)
            );
        }
    }

    #[test]
    fn parity_bits_of_every_format_are_checked() {
        for format in HID {
            let bits = encode_card(format, 100, 200).unwrap();
            for parity in [0, bits.len() - 1] {
                let flipped =
                    Bits::from_value(bits.value() ^ (1 << (bits.len() - 1 - parity)), bits.len() as u8);
                assert_eq!(decode_card(&flipped, &ALL), Err(DecodeError::Parity { format }));
            }
        }
    }

    #[test]
    fn lengths_and_formats_not_accepted_are_refused() {
        let h10306 = encode_card(CardFormat::H10306, 1, 2).unwrap();
        assert_eq!(
            decode_card(&h10306, &[CardFormat::H10301]),
            Err(DecodeError::UnsupportedLength(34))
        );
        let odd = Bits::from_str("101010101010101010101010101010101010101010").unwrap();
        assert_eq!(decode_card(&odd, &HID), Err(DecodeError::UnsupportedLength(42)));
        let raw = decode_card(&odd, &ALL).unwrap();
        assert_eq!((raw.format, raw.number as u128), (CardFormat::Raw, odd.value()));
        assert!(decode_card(&Bits::from_str("1011").unwrap(), &ALL).is_err());
    }

    #[test]
    fn noise_rejects_the_frame() {
        let bits = encode_card(CardFormat::H10301, 1, 2).unwrap();
        let mut edges = edges_for(&bits, 0, &PulseTiming::default());
        // A glitch 100 µs after a real bit.
        edges.insert(
            2,
            Edge {
                line: WiegandLine::D1,
                kind: EdgeKind::Falling,
                timestamp_ns: 100_000,
            },
        );
        edges.sort_by_key(|e| e.timestamp_ns);
        assert_eq!(decode_edges(&edges)[0].unwrap_err().reason(), "pulse_too_close");

        // D1 falls while D0 is still low.
        let both = [
            Edge {
                line: WiegandLine::D0,
                kind: EdgeKind::Falling,
                timestamp_ns: 0,
            },
            Edge {
                line: WiegandLine::D1,
                kind: EdgeKind::Falling,
                timestamp_ns: 1_000_000,
            },
        ];
        assert_eq!(decode_edges(&both)[0].unwrap_err().reason(), "both_lines_low");

        let long = Bits::from_value(u128::MAX, 100);
        let frames = decode_edges(&edges_for(&long, 0, &PulseTiming::default()));
        assert_eq!(frames[0].unwrap_err().reason(), "too_many_bits");

        let backwards = [
            Edge {
                line: WiegandLine::D0,
                kind: EdgeKind::Falling,
                timestamp_ns: 5_000_000,
            },
            Edge {
                line: WiegandLine::D0,
                kind: EdgeKind::Falling,
                timestamp_ns: 1_000_000,
            },
        ];
        assert_eq!(
            decode_edges(&backwards)[0].unwrap_err().reason(),
            "time_went_backwards"
        );
    }

    #[test]
    fn lost_edges_reject_the_open_frame_and_the_next() {
        let card = encode_card(CardFormat::H10301, 1, 17).unwrap();
        let timing = PulseTiming::default();
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        let first = edges_for(&card, 0, &timing);
        let (head, tail) = first.split_at(20);
        for edge in head {
            assert_eq!(decoder.push(*edge), None);
        }
        decoder.edges_lost();
        let mut outcomes: Vec<FrameOutcome> = tail.iter().filter_map(|e| decoder.push(*e)).collect();
        // A whole, intact frame after the gap still decodes.
        let later = edges_for(&card, 1_000_000_000, &timing);
        outcomes.extend(later.iter().filter_map(|e| decoder.push(*e)));
        outcomes.extend(decoder.poll(2_000_000_000));
        assert!(
            matches!(outcomes[0], Err(FrameError::EdgesLost { .. })),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[0].unwrap_err().reason(), "edges_lost");
        assert_eq!(outcomes[1].map(|f| f.bits), Ok(card));

        // Lost between frames: the next frame is the one rejected.
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        decoder.edges_lost();
        let mut outcomes: Vec<FrameOutcome> = first.iter().filter_map(|e| decoder.push(*e)).collect();
        outcomes.extend(decoder.poll(1_000_000_000));
        assert!(
            matches!(outcomes[..], [Err(FrameError::EdgesLost { bits: 0 })]),
            "{outcomes:?}"
        );
    }

    #[test]
    fn frames_end_on_silence_by_push_or_poll() {
        let a = encode_card(CardFormat::H10301, 1, 1).unwrap();
        let b = encode_card(CardFormat::H10301, 2, 2).unwrap();
        let mut decoder = WiegandDecoder::new(DecoderConfig::default());
        let first = edges_for(&a, 0, &PulseTiming::default());
        let second_start = first.last().unwrap().timestamp_ns + 40_000_000;
        let mut outcomes = Vec::new();
        for edge in first
            .iter()
            .chain(&edges_for(&b, second_start, &PulseTiming::default()))
        {
            outcomes.extend(decoder.push(*edge));
        }
        assert_eq!(
            outcomes.len(),
            1,
            "the second card's first edge closes the first frame"
        );
        let deadline = decoder.deadline_ns().unwrap();
        assert!(decoder.poll(deadline - 1).is_none());
        outcomes.extend(decoder.poll(deadline));
        let numbers: Vec<u64> = outcomes
            .iter()
            .map(|o| decode_card(&o.unwrap().bits, &HID).unwrap().number)
            .collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(decoder.deadline_ns(), None);
    }

    #[test]
    fn keypad_bursts_build_a_pin() {
        let mut entry = PinEntry::default();
        let mut at = 0;
        let mut press = |entry: &mut PinEntry, c: char, eight: bool| {
            at += 500_000_000;
            let key = decode_key(&encode_key(Key::from_char(c).unwrap(), eight)).unwrap();
            entry.push_key(key, at)
        };
        for c in "12*4711".chars() {
            assert_eq!(press(&mut entry, c, false), None);
        }
        assert_eq!(
            press(&mut entry, '#', true),
            Some(Ok(Presented::Pin("4711".into())))
        );
        assert_eq!(press(&mut entry, '#', false), Some(Err(PinError::Empty)));
    }

    #[test]
    fn keypad_timeout_and_bad_complement() {
        let mut entry = PinEntry::new(1_000, 12);
        entry.push_key(Key::Digit(9), 0);
        entry.poll(2_000);
        assert_eq!(entry.push_key(Key::Enter, 2_001), Some(Err(PinError::Empty)));
        assert_eq!(decode_key(&Bits::from_str("00010001").unwrap()), None);
        assert_eq!(
            decode_key(&Bits::from_str("1100").unwrap()),
            None,
            "code 12 is not a key"
        );
        let mut entry = PinEntry::new(u64::MAX, 3);
        for d in [1, 2, 3, 4] {
            entry.push_key(Key::Digit(d), 0);
        }
        assert_eq!(entry.push_key(Key::Enter, 0), Some(Err(PinError::TooLong)));
    }

    fn parity_ok(bits: &Bits, layout: &Layout) -> bool {
        let count = |from: usize, to: usize| (from..=to).filter(|&i| bits.get(i)).count();
        (count(0, layout.even.1)) % 2 == 0 && (count(layout.odd.0, layout.bits - 1)) % 2 == 1
    }

    proptest! {
        #[test]
        fn random_edges_never_panic_and_count_bits(
            raw in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..40_000_000), 0..300)
        ) {
            let mut t = 0u64;
            let edges: Vec<Edge> = raw.iter().map(|(d1, fall, dt)| {
                // Mostly forwards, sometimes backwards.
                t = if dt % 17 == 0 { t.saturating_sub(*dt) } else { t + dt };
                Edge {
                    line: if *d1 { WiegandLine::D1 } else { WiegandLine::D0 },
                    kind: if *fall { EdgeKind::Falling } else { EdgeKind::Rising },
                    timestamp_ns: t,
                }
            }).collect();
            for frame in decode_edges(&edges).into_iter().flatten() {
                prop_assert!(!frame.bits.is_empty() && frame.bits.len() <= 64);
                let _ = decode_card(&frame.bits, &ALL);
                let _ = decode_key(&frame.bits);
            }
        }

        #[test]
        fn known_lengths_decode_only_with_correct_parity(value in any::<u64>(), which in 0usize..3) {
            let layout = &LAYOUTS[which];
            let bits = Bits::from_value(value as u128, layout.bits as u8);
            let decoded = decode_card(&bits, &ALL);
            prop_assert_eq!(decoded.is_ok(), parity_ok(&bits, layout));
            if let Ok(card) = decoded {
                prop_assert_eq!(card.format, layout.format);
            }
        }

        #[test]
        fn encode_decode_roundtrip(facility in 0u32..=255, number in 0u64..=65535, wide in 0u32..=65535, long in 0u64..=524_287) {
            for (format, f, n) in [(CardFormat::H10301, facility, number), (CardFormat::H10306, wide, number), (CardFormat::H10304, wide, long)] {
                let card = decode_card(&encode_card(format, f, n).unwrap(), &HID).unwrap();
                prop_assert_eq!((card.facility, card.number), (Some(f), n));
            }
        }
    }
}
