//! The decoder against the wire: frames taken from device documentation and from captured reads,
//! never produced by this project's encoder. Each vector names its source. For each format: the
//! documented frame decodes to the documented facility and number, and every single-bit flip of
//! it is refused (or, where the format has no check, shown to give another value by design).

use super::*;
use crate::credential::{CardFormat, CardRead};
use card::{builtin, BitOrder, CardFormats, DecodeError};

/// A documented frame and what it carries.
struct Vector {
    bits: &'static str,
    format: CardFormat,
    facility: Option<u32>,
    number: u64,
    source: &'static str,
}

const CARDS: &[Vector] = &[
    // ---- H10301, 26 bits ----
    Vector {
        bits: "00110010100001111111111111",
        format: CardFormat::H10301,
        facility: Some(101),
        number: 4095,
        source: "Allegion knowledge base, 'How are the even parity bit and odd parity bit \
                 calculated in the 26A format' (kc.allegion.com), worked example",
    },
    Vector {
        bits: "11101010000011011100000010",
        format: CardFormat::H10301,
        facility: Some(212),
        number: 7041,
        source: "CIVINTEC CN56X0B-X Reader User Manual, 6.4.2 Wiegand26 Format: data D4 1B 81 \
                 → output 1 11010100 00011011 10000001 0",
    },
    Vector {
        bits: "10111101100010001110101110",
        format: CardFormat::H10301,
        facility: Some(123),
        number: 4567,
        source: "Proxmark3 (RfidResearchGroup) tools/pm3_tests.sh: `wiegand decode --raw \
                 2006F623AE` → FC 123 CN 4567 parity ok (HID preamble 0x2004000000 removed)",
    },
    Vector {
        bits: "10111000100011011100111000",
        format: CardFormat::H10301,
        facility: Some(113),
        number: 7068,
        source: "captured: HID ProxCard II shipped with the Proxmark3, z9security/z9open-community \
                 dotnet/Z9.Protobuf.Community.Test/TestBinaryFormatter.cs",
    },
    Vector {
        bits: "01110100101110110011111011",
        format: CardFormat::H10301,
        facility: Some(233),
        number: 30333,
        source: "captured: HID PhotoProx card read by an HID reader and by a Proxmark3, \
                 z9open-community TestBinaryFormatter.cs",
    },
    Vector {
        bits: "10000000100000010001011001",
        format: CardFormat::H10301,
        facility: Some(1),
        number: 556,
        source: "captured: HID iClass card, z9open-community TestBinaryFormatter.cs",
    },
    Vector {
        bits: "00000101000000100010001011",
        format: CardFormat::H10301,
        facility: Some(10),
        number: 1093,
        source: "Nedap COMBI-BOOSTER user manual, 6.3 'HID 26-bit format H10301': facility code \
                 10, driver-id 1093 → TXD …14088B",
    },
    // ---- H10306, 34 bits ----
    Vector {
        bits: "1100010011101010000011011100000011",
        format: CardFormat::H10306,
        facility: Some(0x89D4),
        number: 0x1B81,
        source: "CIVINTEC CN56X0B-X Reader User Manual, 6.4.5 Wiegand34 Format: data 89 D4 1B 81 \
                 → output 1 10001001 11010100 00011011 10000001 1",
    },
    Vector {
        bits: "1010010011001011000000010110100100",
        format: CardFormat::H10306,
        facility: Some(18838),
        number: 722,
        source: "Hikvision Wiegand camera operation manual (DS-2CD7A26G0), 34-bit coding example: \
                 card 1234567890 = 0x499602D2 → 1 0100…0010 0; H10306 reads its halves as \
                 facility 0x4996 and number 0x02D2",
    },
    // ---- Corporate 1000, 35 bits ----
    Vector {
        bits: "10010100111001000000001000010110011",
        format: CardFormat::CORPORATE_1000_35,
        facility: Some(1337),
        number: 2137,
        source: "captured: an HID reader's Wiegand output 0x4A72010B3 for an iCLASS card encoded \
                 as C1k35s FC 1337 CN 2137, decoded as 'C1000-35 | 1337 | 2137' \
                 (jkramarz/TheTick pull request #20)",
    },
    // ---- H10304, 37 bits ----
    Vector {
        bits: "0010110000100101000101011100101000000",
        format: CardFormat::H10304,
        facility: Some(22602),
        number: 89248,
        source: "captured: a ValuProx HID card read by a Proxmark3, raw 0584a2b940 → 'H10304 \
                 FC: 22602 CN: 89248 parity ( ok )' (flipperdevices/flipperzero-firmware \
                 issue #1029)",
    },
    // ---- H10302, 37 bits ----
    Vector {
        bits: "1000000001110101101111001101000101011",
        format: CardFormat::H10302,
        facility: None,
        number: 123_456_789,
        source: "Nedap COMBI-BOOSTER user manual, 6.3 'HID proprietary 37-bit format H10302': \
                 driver-id 123456789 → TXD …100EB79A2B",
    },
    Vector {
        bits: "0010110000100101000101011100101000000",
        format: CardFormat::H10302,
        facility: None,
        number: 11_850_046_624,
        source: "captured: the same ValuProx card, 'H10302 CN: 11850046624 parity ( ok )' \
                 (flipperzero-firmware issue #1029): the frame fits H10304 too",
    },
];

fn bits(text: &str) -> Bits {
    Bits::from_str(text).expect("a vector is 0s and 1s")
}

/// The door formats a vector is decoded with: its own format, and raw.
fn only(format: &CardFormat) -> CardFormats {
    CardFormats::builtin(&[format.clone(), CardFormat::RAW])
}

#[test]
fn documented_card_frames_decode_to_their_documented_fields() {
    for v in CARDS {
        let card =
            decode_card(&bits(v.bits), &only(&v.format)).unwrap_or_else(|e| panic!("{}: {e}", v.source));
        assert_eq!(
            (&card.format, card.facility, card.number),
            (&v.format, v.facility, v.number),
            "{}",
            v.source
        );
        assert_eq!(card.raw, bits(v.bits).value());
    }
}

#[test]
fn every_single_bit_flip_of_a_documented_card_frame_is_refused() {
    // Every bit of each built-in parity format is covered by a parity bit (H10304's bit 18 by
    // both, Corporate 1000's by bit 0 and one of the others): one misread bit can never become
    // another card.
    for v in CARDS {
        let good = bits(v.bits);
        assert!(builtin(&v.format).unwrap().unchecked_bits().is_empty());
        for i in 0..good.len() {
            assert_eq!(
                decode_card(&good.flipped(i), &only(&v.format)),
                Err(DecodeError::Parity {
                    format: v.format.clone()
                }),
                "bit {i} of {}",
                v.source
            );
        }
    }
}

/// Sites that enrolled cards by their data bits (parity taken out): the Hikvision example's
/// 34-bit frame is card 1234567890, the CIVINTEC one 0x89D41B81; Nedap's H10302 frame 123456789;
/// the captured ValuProx frame read as H10304 is the same 35-bit number the Proxmark3 printed
/// as H10302.
#[test]
fn data_bits_are_the_frame_without_its_parity() {
    for (index, data) in [
        (8, 1_234_567_890u128),
        (7, 0x89D4_1B81),
        (11, 123_456_789),
        (10, 11_850_046_624),
        (0, 101 << 16 | 4095),
    ] {
        let v = &CARDS[index];
        let card = decode_card(&bits(v.bits), &only(&v.format)).unwrap();
        assert_eq!(card.data, data, "{}", v.source);
    }
}

#[test]
fn h10302_and_h10304_frames_are_ambiguous_at_a_door_listing_both() {
    let both = CardFormats::builtin(&[CardFormat::H10302, CardFormat::H10304]);
    assert_eq!(
        decode_card(&bits(CARDS[11].bits), &both),
        Err(DecodeError::Ambiguous {
            formats: vec![CardFormat::H10302, CardFormat::H10304]
        })
    );
}

#[test]
fn a_format_not_accepted_at_the_door_is_refused_not_reread() {
    let h10306 = bits(CARDS[7].bits);
    assert_eq!(
        decode_card(
            &h10306,
            &CardFormats::builtin(&[CardFormat::H10301, CardFormat::RAW])
        ),
        Err(DecodeError::UnsupportedLength(34)),
        "a known length is never taken as raw"
    );
    let c1000 = bits(CARDS[9].bits);
    assert_eq!(
        decode_card(&c1000, &CardFormats::builtin(&[CardFormat::RAW])),
        Err(DecodeError::UnsupportedLength(35)),
        "nor is Corporate 1000's"
    );
}

/// Raw frames carry no check by definition: the whole frame is the number. The documented
/// 32-bit frame (CIVINTEC CN56X0B-X manual, 6.4.3 Wiegand32: output
/// 1 001111110101010101010110010000 1) decodes to its value; a flipped bit is by design another
/// raw value, which only matches if that value is enrolled.
#[test]
fn raw_frames_are_their_value_and_have_no_check_by_design() {
    let frame = bits("10011111101010101010101100100001");
    let expect = |b: &Bits| CardRead {
        format: CardFormat::RAW,
        facility: None,
        number: b.value() as u64,
        bit_count: 32,
        raw: b.value(),
        data: b.value(),
    };
    let raw = CardFormats::builtin(&[CardFormat::RAW]);
    assert_eq!(decode_card(&frame, &raw), Ok(expect(&frame)));
    assert_eq!(frame.value(), 2_678_762_273);
    for i in 0..frame.len() {
        let flipped = frame.flipped(i);
        assert_eq!(decode_card(&flipped, &raw), Ok(expect(&flipped)));
        assert_ne!(flipped.value(), frame.value());
    }
    assert!(
        decode_card(&frame, &CardFormats::builtin(&[CardFormat::H10301])).is_err(),
        "raw only where the door accepts it"
    );
}

/// UID readers send the UID without parity (CIVINTEC CN56X0B-X manual 6.4.6 and 6.4.9:
/// "Wiegand40 / Wiegand56 don't have odd/even parity bits"): the 7-byte UID 04 A2 24 92 5B 11 80
/// is the number 0x04A224925B1180. With the bytes sent last first (Rosslare AY-Q6x50 manual
/// 5.9.6, "Wiegand 32-Bit Reversed": the LSB byte of the serial number first), a site defines
/// the same layout with `bit_order = "bytes_reversed"`. No check: a flipped bit is another UID.
#[test]
fn uid_frames_are_the_uid_and_byte_reversal_restores_it() {
    let uid = 0x04_A224_925B_1180_u128;
    let frame = Bits::from_value(uid, 56);
    let uid56 = CardFormats::builtin(&[CardFormat::UID56]);
    let card = decode_card(&frame, &uid56).unwrap();
    assert_eq!((card.number as u128, card.data, card.facility), (uid, uid, None));
    let reversed_on_the_wire = Bits::from_value(0x80_115B_9224_A204, 56);
    let mut layout = builtin(&CardFormat::UID56).unwrap().clone();
    layout.order = BitOrder::BytesReversed;
    let site = CardFormats::new(vec![layout], false, &[]);
    assert_eq!(
        decode_card(&reversed_on_the_wire, &site).unwrap().number as u128,
        uid
    );
    for i in 0..56 {
        let read = decode_card(&frame.flipped(i), &uid56).unwrap();
        assert_ne!(read.number as u128, uid, "bit {i}");
    }
    assert_eq!(
        decode_card(&Bits::from_value(uid, 57), &uid56),
        Err(DecodeError::UnsupportedLength(57))
    );
}

/// Rosslare AY-Q54 / AY-G6xx0 manuals, "Single Key, Wiegand 8-Bit, Nibbles Complemented", and HID
/// PINpad 8-bit Wiegand Reader guide 7393760 rev E, Table 1 (1 = 1110 0001, 6 = 1001 0110,
/// # = 0100 1011).
const EIGHT_BIT: [(&str, char); 12] = [
    ("11110000", '0'),
    ("11100001", '1'),
    ("11010010", '2'),
    ("11000011", '3'),
    ("10110100", '4'),
    ("10100101", '5'),
    ("10010110", '6'),
    ("10000111", '7'),
    ("01111000", '8'),
    ("01101001", '9'),
    ("01011010", '*'),
    ("01001011", '#'),
];

/// Rosslare AYC-Q series manual, 4.2.3.9 "Single Key, Wiegand 4-Bit" (* = A, # = B).
const FOUR_BIT: [(&str, char); 12] = [
    ("0000", '0'),
    ("0001", '1'),
    ("0010", '2'),
    ("0011", '3'),
    ("0100", '4'),
    ("0101", '5'),
    ("0110", '6'),
    ("0111", '7'),
    ("1000", '8'),
    ("1001", '9'),
    ("1010", '*'),
    ("1011", '#'),
];

#[test]
fn documented_keypad_bursts_decode_to_their_keys() {
    for (wire, key) in EIGHT_BIT.iter().chain(&FOUR_BIT) {
        assert_eq!(decode_key(&bits(wire)), Key::from_char(*key), "{wire}");
    }
}

#[test]
fn every_single_bit_flip_of_an_eight_bit_key_is_refused() {
    for (wire, key) in EIGHT_BIT {
        let good = bits(wire);
        for i in 0..8 {
            assert_eq!(decode_key(&good.flipped(i)), None, "bit {i} of {key}");
        }
    }
}

/// A 4-bit burst carries no check: a flipped bit is another key code (by design of the format)
/// or a code that is no key (12-15), which is refused. Never the same key.
#[test]
fn four_bit_flips_give_another_key_or_none_by_design() {
    for (wire, key) in FOUR_BIT {
        for i in 0..4 {
            let flipped = decode_key(&bits(wire).flipped(i));
            assert_ne!(flipped, Key::from_char(key), "bit {i} of {key}");
            let code = bits(wire).flipped(i).value();
            assert_eq!(flipped.is_none(), code >= 12, "bit {i} of {key}");
        }
    }
}

/// The reported fault: on an 8-bit keypad, typing 6789 must present "6789" (it used to present
/// "9876", admitting the wrong person), and keys 0-3 must not be dropped.
#[test]
fn eight_bit_pins_are_read_as_typed() {
    let wire = |c: char| EIGHT_BIT.iter().find(|(_, k)| *k == c).unwrap().0;
    for typed in ["6789", "0123", "4455"] {
        let mut entry = PinEntry::default();
        let mut at = 0;
        let mut submitted = None;
        for c in typed.chars().chain(['#']) {
            at += 300_000_000;
            let key = decode_key(&bits(wire(c))).unwrap();
            submitted = entry.push_key(key, at);
        }
        assert_eq!(
            submitted,
            Some(Ok(crate::credential::Presented::Pin(typed.into()))),
            "{typed}"
        );
    }
}
