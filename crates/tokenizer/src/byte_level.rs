//! GPT-2's byte-level alphabet: every byte is spelled as one printable character.
//!
//! Byte-level BPE vocabularies store tokens as strings over this alphabet so that a token file
//! never holds a raw control byte or a broken UTF-8 sequence. Bytes 0x21-0x7E, 0xA1-0xAC and
//! 0xAE-0xFF stand for themselves; the other 68 bytes map, in increasing order, to U+0100..U+0143
//! (so space is U+0120 'Ġ' and '\n' is U+010A 'Ċ').

/// Whether `byte` is spelled by the character with the same code point.
const fn is_self_spelled(byte: u8) -> bool {
    matches!(byte, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// First code point used for the bytes that are not self-spelled.
const SHIFTED_BASE: u32 = 0x100;
/// How many bytes are not self-spelled.
const SHIFTED_COUNT: usize = 68;

const fn build_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    let mut byte = 0usize;
    while byte < 256 {
        let code = if is_self_spelled(byte as u8) {
            byte as u32
        } else {
            shifted += 1;
            SHIFTED_BASE + shifted - 1
        };
        table[byte] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        byte += 1;
    }
    table
}

const fn build_shifted_to_byte() -> [u8; SHIFTED_COUNT] {
    let mut table = [0u8; SHIFTED_COUNT];
    let mut shifted = 0usize;
    let mut byte = 0usize;
    while byte < 256 {
        if !is_self_spelled(byte as u8) {
            table[shifted] = byte as u8;
            shifted += 1;
        }
        byte += 1;
    }
    table
}

const BYTE_TO_CHAR: [char; 256] = build_byte_to_char();
const SHIFTED_TO_BYTE: [u8; SHIFTED_COUNT] = build_shifted_to_byte();

/// The character that spells `byte` in a byte-level vocabulary.
pub fn byte_to_char(byte: u8) -> char {
    BYTE_TO_CHAR[byte as usize]
}

/// The byte a byte-level character stands for, or `None` for a character outside the alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    let code = c as u32;
    if code < 0x100 {
        let byte = code as u8;
        return is_self_spelled(byte).then_some(byte);
    }
    let shifted = code - SHIFTED_BASE;
    SHIFTED_TO_BYTE.get(shifted as usize).copied()
}

/// Raw bytes of a token spelled in the byte-level alphabet, or `None` when the spelling holds a
/// character outside it (such tokens are taken verbatim, as Hugging Face's ByteLevel decoder does).
pub fn decode_spelling(spelling: &str) -> Option<Vec<u8>> {
    spelling.chars().map(char_to_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_through_its_character() {
        for byte in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(byte)), Some(byte), "byte {byte:#04x}");
        }
    }

    #[test]
    fn space_and_newline_use_the_gpt2_spelling() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(0x00), '\u{100}');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xE9), 'é');
    }

    #[test]
    fn characters_outside_the_alphabet_have_no_byte() {
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte('世'), None);
        assert_eq!(decode_spelling("ĠhelloĊ"), Some(b" hello\n".to_vec()));
        assert_eq!(decode_spelling("a b"), None);
    }
}
