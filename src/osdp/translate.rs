//! Pure translations between OSDP payloads and the agent's own types: card data and keypad
//! bytes in (OSDP v2.2 §7.10 osdp_RAW, §7.12 osdp_KEYPAD), LED and buzzer commands out
//! (§6.10 osdp_LED, §6.11 osdp_BUZ).

use crate::reader::feedback::{FeedbackPattern, LedColor};
use crate::wiegand::{Bits, Key, MAX_BITS};
use libosdp::{OsdpCommandBuzzer, OsdpCommandLed, OsdpLedColor, OsdpLedParams};

/// Why a card read could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardDataError {
    /// More bits than a card frame the agent decodes (128).
    TooLong(usize),
    Empty,
    /// The reader claimed more bits than it sent bytes for.
    Truncated,
}

impl CardDataError {
    pub fn reason(self) -> &'static str {
        match self {
            CardDataError::TooLong(_) => "card_data_too_long",
            CardDataError::Empty => "card_data_empty",
            CardDataError::Truncated => "card_data_truncated",
        }
    }
}

/// The bits of an osdp_RAW card read: `bit_count` bits packed first bit first into the high
/// bits of `data[0]`, then `data[1]`, … (the last byte padded with zeros).
pub fn card_bits(bit_count: usize, data: &[u8]) -> Result<Bits, CardDataError> {
    if bit_count == 0 {
        return Err(CardDataError::Empty);
    }
    if bit_count > MAX_BITS {
        return Err(CardDataError::TooLong(bit_count));
    }
    if data.len() * 8 < bit_count {
        return Err(CardDataError::Truncated);
    }
    let value = (0..bit_count).fold(0u128, |acc, i| {
        let bit = (data[i / 8] >> (7 - i % 8)) & 1;
        (acc << 1) | u128::from(bit)
    });
    Ok(Bits::from_value(value, bit_count as u8))
}

/// Keys of an osdp_KEYPAD reply: ASCII `0`-`9`; `*` is DEL (0x7F) and `#` is CR (0x0D) in
/// OSDP v2.2; some readers send the ASCII `*` (0x2A) and `#` (0x23) instead, accepted too.
/// Function keys (`A`-`H`) and anything else are skipped.
pub fn keypad_keys(data: &[u8]) -> Vec<Key> {
    data.iter()
        .filter_map(|&byte| match byte {
            b'0'..=b'9' => Some(Key::Digit(byte - b'0')),
            0x7F | b'*' => Some(Key::Clear),
            0x0D | b'#' => Some(Key::Enter),
            _ => None,
        })
        .collect()
}

/// OSDP timers count 100 ms units; a pattern's times round to the nearest unit, at least one.
fn units_of_100ms(ms: u32) -> u32 {
    ((ms + 50) / 100).max(1)
}

fn osdp_color(color: LedColor) -> OsdpLedColor {
    match color {
        LedColor::Red => OsdpLedColor::Red,
        LedColor::Green => OsdpLedColor::Green,
        LedColor::Amber => OsdpLedColor::Amber,
        LedColor::Blue => OsdpLedColor::Blue,
    }
}

/// The osdp_LED command for a pattern: a temporary state (control code 2) holding the colour
/// steady for `led_ms`, after which the reader returns to its permanent state (left alone).
/// `None` when the pattern leaves the LED alone.
pub fn led_command(pattern: &FeedbackPattern) -> Option<OsdpCommandLed> {
    let color = osdp_color(pattern.led?);
    let timer = units_of_100ms(pattern.led_ms).min(u32::from(u16::MAX)) as u16;
    Some(OsdpCommandLed {
        reader: 0,
        led_number: 0,
        temporary: OsdpLedParams {
            control_code: 2,
            // Steady: on for the whole timer, never off.
            on_count: timer.min(255) as u8,
            off_count: 0,
            on_color: color,
            off_color: color,
            timer_count: timer,
        },
        permanent: OsdpLedParams::default(), // control code 0: leave the permanent state
    })
}

/// The osdp_BUZ command for a pattern: the default tone (control code 2), `beeps` times on and
/// off for `beep_ms` each. `None` when the pattern is silent.
pub fn buzzer_command(pattern: &FeedbackPattern) -> Option<OsdpCommandBuzzer> {
    if pattern.beeps == 0 {
        return None;
    }
    let unit = units_of_100ms(pattern.beep_ms).min(255) as u8;
    Some(OsdpCommandBuzzer {
        reader: 0,
        control_code: 2,
        on_count: unit,
        off_count: unit,
        rep_count: pattern.beeps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CardFormat;
    use crate::hw::mock::reader::encode_card;
    use crate::reader::feedback::Outcome;
    use crate::wiegand::{decode_card, CardFormats};

    /// Packs bits the way an OSDP reader does (first bit in the high bit of byte 0).
    fn pack(bits: &Bits) -> Vec<u8> {
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for i in 0..bits.len() {
            if bits.get(i) {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        bytes
    }

    #[test]
    fn a_26_bit_raw_read_decodes_like_the_wiegand_frame() {
        let frame = encode_card(CardFormat::H10301, 191, 4242).unwrap();
        let bits = card_bits(26, &pack(&frame)).unwrap();
        assert_eq!(bits, frame);
        let card = decode_card(&bits, &CardFormats::builtin(&[CardFormat::H10301])).unwrap();
        assert_eq!((card.facility, card.number), (Some(191), 4242));
    }

    #[test]
    fn known_bytes_give_known_bits() {
        // 0xA5 0xC0 with 10 bits: 1010 0101 11
        let bits = card_bits(10, &[0xA5, 0xC0]).unwrap();
        assert_eq!(bits.to_string(), "1010010111");
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert_eq!(card_bits(0, &[]), Err(CardDataError::Empty));
        assert_eq!(card_bits(26, &[0, 0, 0]), Err(CardDataError::Truncated));
        assert_eq!(card_bits(129, &[0; 17]), Err(CardDataError::TooLong(129)));
        assert_eq!(card_bits(128, &[0xFF; 16]).unwrap().len(), 128);
    }

    #[test]
    fn keypad_bytes_in_both_spellings() {
        assert_eq!(
            keypad_keys(b"12\x7f34\x0d"),
            [
                Key::Digit(1),
                Key::Digit(2),
                Key::Clear,
                Key::Digit(3),
                Key::Digit(4),
                Key::Enter
            ]
        );
        assert_eq!(keypad_keys(b"9*#A"), [Key::Digit(9), Key::Clear, Key::Enter]);
    }

    #[test]
    fn grant_default_becomes_two_seconds_green_and_one_beep() {
        let pattern = FeedbackPattern::default_for(Outcome::Granted);
        let led = led_command(&pattern).unwrap();
        assert_eq!(led.temporary.control_code, 2);
        assert_eq!(led.temporary.on_color, OsdpLedColor::Green);
        assert_eq!(led.temporary.timer_count, 20);
        assert_eq!(led.temporary.off_count, 0);
        assert_eq!(led.permanent.control_code, 0);
        let buzzer = buzzer_command(&pattern).unwrap();
        assert_eq!(
            (
                buzzer.control_code,
                buzzer.on_count,
                buzzer.off_count,
                buzzer.rep_count
            ),
            (2, 2, 2, 1)
        );
    }

    #[test]
    fn silent_and_dark_patterns_send_nothing() {
        let pattern = FeedbackPattern {
            led: None,
            led_ms: 2000,
            beeps: 0,
            beep_ms: 200,
        };
        assert!(led_command(&pattern).is_none());
        assert!(buzzer_command(&pattern).is_none());
    }

    #[test]
    fn times_round_to_100ms_units_and_never_to_zero() {
        assert_eq!(units_of_100ms(149), 1);
        assert_eq!(units_of_100ms(150), 2);
        assert_eq!(units_of_100ms(10), 1);
        assert_eq!(units_of_100ms(60_000), 600);
    }
}
