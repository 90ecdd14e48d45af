//! A Wiegand frame's bits: up to 128, first bit most significant.

use std::fmt;

/// The most bits a `Bits` holds.
pub const MAX_BITS: usize = 128;

/// Up to 128 bits, first bit (the first one on the wire) most significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bits {
    value: u128,
    len: u8,
}

impl Bits {
    pub fn new() -> Bits {
        Bits::default()
    }

    /// Parses a string of `0` and `1` (1 to 128 of them); `None` otherwise. The length is checked
    /// before anything else, so a huge string costs nothing.
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

    /// The low `len` bits of `value`, most significant first (`len` is capped at 128).
    pub fn from_value(value: u128, len: u8) -> Bits {
        let len = len.min(MAX_BITS as u8);
        let mask = if len as usize >= MAX_BITS {
            u128::MAX
        } else {
            (1u128 << len) - 1
        };
        Bits {
            value: value & mask,
            len,
        }
    }

    /// Appends one bit (the decoder only pushes below `MAX_BITS`).
    pub(super) fn push(&mut self, bit: bool) {
        debug_assert!(self.len() < MAX_BITS);
        self.value = (self.value << 1) | bit as u128;
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`, counted from the first (most significant) bit; `false` past the end.
    pub fn get(&self, i: usize) -> bool {
        i < self.len() && (self.value >> (self.len() - 1 - i)) & 1 == 1
    }

    /// The frame as one unsigned number, first bit most significant.
    pub fn value(&self) -> u128 {
        self.value
    }

    /// The same frame with bit `i` (from the first) inverted: what one misread bit looks like.
    pub fn flipped(&self, i: usize) -> Bits {
        if i >= self.len() {
            return *self;
        }
        Bits {
            value: self.value ^ (1 << (self.len() - 1 - i)),
            len: self.len,
        }
    }

    /// Bits `from..=to` as a number (at most 64 of them).
    pub fn field(&self, from: usize, to: usize) -> u64 {
        (from..=to).fold(0u64, |acc, i| (acc << 1) | self.get(i) as u64)
    }

    /// How many of bits `from..=to` are set.
    pub fn ones(&self, from: usize, to: usize) -> u32 {
        (from..=to).filter(|&i| self.get(i)).count() as u32
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (0..self.len()).try_for_each(|i| f.write_str(if self.get(i) { "1" } else { "0" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_print_and_flip() {
        let bits = Bits::from_str("1011").unwrap();
        assert_eq!(
            (bits.value(), bits.len(), bits.to_string()),
            (0b1011, 4, "1011".into())
        );
        assert_eq!(bits.flipped(0).to_string(), "0011");
        assert_eq!(bits.flipped(3).to_string(), "1010");
        assert_eq!(bits.field(1, 3), 0b011);
        assert_eq!(bits.ones(0, 3), 3);
        assert!(Bits::from_str("").is_none());
        assert!(Bits::from_str("012").is_none());
        assert!(Bits::from_str(&"1".repeat(129)).is_none());
        assert_eq!(Bits::from_str(&"1".repeat(128)).unwrap().value(), u128::MAX);
        assert_eq!(Bits::from_value(0xFF, 4).value(), 0xF);
    }
}
