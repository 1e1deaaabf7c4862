//! Character classes as the pre-tokenizer patterns see them, from pinned Unicode tables.
//!
//! The patterns test only a few properties of a character: `\p{L}` (general category L*), `\p{N}`
//! (N*), `\s` (the White_Space property), and, inside `\s`, whether it is `' '` or one of
//! `\r`/`\n`. Everything else (punctuation, symbols, marks, controls, emoji, unassigned code
//! points) behaves alike and is [`Class::Other`]. The apostrophe and the contraction letters are
//! compared as bytes by the scanners.
//!
//! Categories come from `unicode-general-category` (Unicode [`UNICODE_VERSION`], the same as the
//! `regex-syntax` tables fancy-regex uses and as the Oniguruma inside Hugging Face `tokenizers`
//! 0.23). White_Space is spelled out below rather than taken from `char::is_whitespace`, so that
//! the tables do not move with the Rust toolchain.
//!
//! Lookup cost matters: the scanners classify every character of the input. ASCII is one load
//! from a 128-entry table; the rest of the Basic Multilingual Plane is one load from a 64 KiB table
//! built on first use (about a millisecond); only the supplementary planes (emoji, rare CJK) pay
//! for the binary search in the category tables.

use std::sync::OnceLock;

use unicode_general_category::{get_general_category, GeneralCategory};

/// The Unicode version of the category tables.
pub const UNICODE_VERSION: (u64, u64, u64) = unicode_general_category::UNICODE_VERSION;

/// The class of a character, as the GPT-2, Llama-3 and Qwen2 patterns see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Class {
    /// `\p{L}`: a letter of any script (Lu, Ll, Lt, Lm, Lo).
    Letter,
    /// `\p{N}`: a number (Nd decimal digits of every script, Nl letter numbers, No others).
    Number,
    /// U+0020, the only whitespace that ` ?` in the patterns accepts.
    Space,
    /// `\r` or `\n`, the whitespace that `[\r\n]` names in the Llama-3 and Qwen2 patterns.
    LineBreak,
    /// Any other White_Space character: tab, U+000B, U+000C, U+0085, U+00A0, U+1680,
    /// U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
    Whitespace,
    /// Everything else.
    Other,
}

impl Class {
    /// Whether `\s` matches a character of this class.
    #[inline]
    pub fn is_whitespace(self) -> bool {
        matches!(self, Class::Space | Class::LineBreak | Class::Whitespace)
    }
}

/// The White_Space characters other than space, `\r` and `\n` (PropList.txt, unchanged since
/// Unicode 6.3, when U+180E left the list).
const OTHER_WHITE_SPACE: [char; 22] = [
    '\t', '\u{0B}', '\u{0C}', '\u{85}', '\u{A0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}',
    '\u{2007}', '\u{2008}', '\u{2009}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}', '\u{3000}',
];

/// The class of `c`, straight from the tables (no cache).
fn classify_uncached(c: char) -> Class {
    match c {
        ' ' => return Class::Space,
        '\r' | '\n' => return Class::LineBreak,
        _ if OTHER_WHITE_SPACE.contains(&c) => return Class::Whitespace,
        _ => {}
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

const fn build_ascii() -> [Class; 128] {
    let mut table = [Class::Other; 128];
    let mut byte = 0usize;
    while byte < 128 {
        let b = byte as u8;
        table[byte] = if b.is_ascii_alphabetic() {
            Class::Letter
        } else if b.is_ascii_digit() {
            Class::Number
        } else if b == b' ' {
            Class::Space
        } else if b == b'\r' || b == b'\n' {
            Class::LineBreak
        } else if b == b'\t' || b == 0x0B || b == 0x0C {
            // 0x1C-0x1F are separators to Python's str.isspace but not White_Space.
            Class::Whitespace
        } else {
            Class::Other
        };
        byte += 1;
    }
    table
}

/// Class of every ASCII byte.
pub(crate) const ASCII: [Class; 128] = build_ascii();

/// Number of code points in the Basic Multilingual Plane.
const BMP_SIZE: usize = 0x1_0000;

static BMP: OnceLock<Box<[Class]>> = OnceLock::new();

fn bmp_table() -> &'static [Class] {
    BMP.get_or_init(|| {
        (0..BMP_SIZE as u32)
            // Surrogates are not characters and never occur in a `str`.
            .map(|code| char::from_u32(code).map_or(Class::Other, classify_uncached))
            .collect()
    })
}

/// The class of one character.
pub fn classify(c: char) -> Class {
    Table::get().of_code_point(c as u32)
}

/// A handle on the class tables, fetched once per scan so that the hot loop does not touch the
/// `OnceLock`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Table {
    bmp: &'static [Class],
}

impl Table {
    /// The tables, built on first use.
    pub fn get() -> Table {
        Table { bmp: bmp_table() }
    }

    #[inline]
    fn of_code_point(self, code: u32) -> Class {
        match self.bmp.get(code as usize) {
            Some(&class) => class,
            None => char::from_u32(code).map_or(Class::Other, classify_uncached),
        }
    }

    /// The class and UTF-8 length of the character that starts at byte `pos` of `bytes`, or
    /// `None` at the end. `bytes` must be valid UTF-8 (a `str`'s) and `pos` a character
    /// boundary; the scanners only ever step by whole characters.
    #[inline]
    pub fn at(self, bytes: &[u8], pos: usize) -> Option<(Class, usize)> {
        let lead = *bytes.get(pos)?;
        if lead < 0x80 {
            return Some((ASCII[lead as usize], 1));
        }
        // Continuation bits; a missing byte cannot happen in valid UTF-8 and reads as 0.
        let cont = |i: usize| bytes.get(pos + i).map_or(0, |&b| u32::from(b & 0x3F));
        let (code, len) = if lead < 0xE0 {
            ((u32::from(lead & 0x1F) << 6) | cont(1), 2)
        } else if lead < 0xF0 {
            ((u32::from(lead & 0x0F) << 12) | (cont(1) << 6) | cont(2), 3)
        } else {
            let code = (u32::from(lead & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
            (code, 4)
        };
        Some((self.of_code_point(code), len))
    }

    /// Byte offset just past the run of characters of class `class` that starts at `pos`.
    #[inline]
    pub fn run_end(self, bytes: &[u8], mut pos: usize, class: Class) -> usize {
        loop {
            // ASCII fast path: one table load per byte and no decoding (most text is ASCII
            // words, and this loop is where the scanners spend their time).
            while let Some(&byte) = bytes.get(pos) {
                if byte >= 0x80 {
                    break;
                }
                if ASCII[byte as usize] != class {
                    return pos;
                }
                pos += 1;
            }
            match self.at(bytes, pos) {
                Some((found, len)) if found == class => pos += len,
                _ => return pos,
            }
        }
    }

    /// End of `\s+(?!\S)|\s+` at `start`, which holds whitespace: the whole whitespace run when
    /// it reaches the end of the text or is one character long, else the run without its last
    /// character (which then leads the next piece: `"a   b"` gives `"a"`, `"  "`, `" b"`).
    #[inline]
    pub fn space_run_end(self, bytes: &[u8], start: usize) -> usize {
        let mut pos = start;
        let mut last = start;
        let mut count = 0usize;
        while let Some((class, len)) = self.at(bytes, pos) {
            if !class.is_whitespace() {
                break;
            }
            last = pos;
            pos += len;
            count += 1;
        }
        if count > 1 && pos < bytes.len() {
            last
        } else {
            pos
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_sample_characters() {
        assert_eq!(classify('a'), Class::Letter);
        assert_eq!(classify('ſ'), Class::Letter);
        assert_eq!(classify('ʰ'), Class::Letter);
        assert_eq!(classify('中'), Class::Letter);
        assert_eq!(classify('\u{20000}'), Class::Letter);
        assert_eq!(classify('٣'), Class::Number);
        assert_eq!(classify('½'), Class::Number);
        assert_eq!(classify('Ⅻ'), Class::Number);
        assert_eq!(classify('𝟙'), Class::Number);
        assert_eq!(classify(' '), Class::Space);
        assert_eq!(classify('\r'), Class::LineBreak);
        assert_eq!(classify('\n'), Class::LineBreak);
        assert_eq!(classify('\t'), Class::Whitespace);
        assert_eq!(classify('\u{85}'), Class::Whitespace);
        assert_eq!(classify('\u{3000}'), Class::Whitespace);
        assert_eq!(classify('\u{1c}'), Class::Other);
        assert_eq!(classify('\u{180e}'), Class::Other);
        assert_eq!(classify('\u{200b}'), Class::Other);
        assert_eq!(classify('\u{301}'), Class::Other);
        assert_eq!(classify('😀'), Class::Other);
    }

    #[test]
    fn white_space_list_is_the_unicode_property() {
        // Rust's `char::is_whitespace` is White_Space too; the list pins it independently.
        for code in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            assert_eq!(classify(c).is_whitespace(), c.is_whitespace(), "U+{code:04X}");
        }
    }

    #[test]
    fn cached_table_equals_the_category_tables() {
        for code in 0..BMP_SIZE as u32 {
            if let Some(c) = char::from_u32(code) {
                assert_eq!(classify(c), classify_uncached(c), "U+{code:04X}");
            }
        }
    }

    #[test]
    fn decoding_reads_every_utf8_length() {
        let text = "a\u{e9}\u{4e2d}\u{1F600}";
        let table = Table::get();
        let bytes = text.as_bytes();
        assert_eq!(table.at(bytes, 0), Some((Class::Letter, 1)));
        assert_eq!(table.at(bytes, 1), Some((Class::Letter, 2)));
        assert_eq!(table.at(bytes, 3), Some((Class::Letter, 3)));
        assert_eq!(table.at(bytes, 6), Some((Class::Other, 4)));
        assert_eq!(table.at(bytes, 10), None);
    }

    #[test]
    fn unicode_version_is_pinned() {
        // A bump of `unicode-general-category` moves code points between classes; the golden
        // fixtures (tests/scanners.rs compares with Hugging Face's Oniguruma tables) must then
        // be looked at again.
        assert_eq!(UNICODE_VERSION, (16, 0, 0));
    }
}
