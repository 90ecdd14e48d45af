//! Keypads in single-key burst mode: each key press is its own frame, 4 or 8 bits.
//!
//! - 4-bit: the key's code, `0`–`9`, `*` = 10 (0xA), `#` = 11 (0xB). Rosslare AYC-Q series
//!   manual, §4.2.3.9 "Single Key, Wiegand 4-Bit".
//! - 8-bit: the one's complement of the code in the first (most significant) nibble, the code in
//!   the last: key 1 is `1110 0001` (0xE1), key 6 is `1001 0110` (0x96), `#` is `0100 1011`
//!   (0x4B). HID Global "PINpad 8-bit Wiegand Reader" installation guide 7393760 rev E, Table 1
//!   ("The four LSBs represent the binary equivalent of the decimal character … The four MSBs
//!   represent the Ones complement of the four LSBs"); Rosslare AY-Q54 / AY-G6xx0 manuals, option
//!   3 "Single Key, Wiegand 8-Bit, Nibbles Complemented".

use super::Bits;
use crate::credential::Presented;

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

    /// The key's 4-bit code on the wire.
    pub fn code(self) -> u8 {
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

/// A 4-bit burst (the key code) or an 8-bit burst (complement, then the code); `None` for any
/// other length, a code that is no key (12–15) or an 8-bit burst whose nibbles do not complement.
pub fn decode_key(bits: &Bits) -> Option<Key> {
    match bits.len() {
        4 => Key::from_code(bits.value() as u8),
        8 => {
            let (complement, code) = ((bits.value() >> 4) as u8, (bits.value() & 0xF) as u8);
            (complement ^ code == 0xF).then(|| Key::from_code(code)).flatten()
        }
        _ => None,
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

/// Longest PIN kept, digits; longer entries are refused as `pin_too_long`.
pub const MAX_PIN_DIGITS: usize = 12;

impl Default for PinEntry {
    fn default() -> Self {
        PinEntry::new(10_000_000_000, MAX_PIN_DIGITS)
    }
}

impl PinEntry {
    /// `timeout_ns`: a pause this long (monotonic ns) forgets the digits typed so far.
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
