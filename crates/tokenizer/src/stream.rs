//! Streaming detokenization: text out as tokens come in, never a broken character.
//!
//! A byte-level token can end in the middle of a UTF-8 character (an emoji is often two or three
//! tokens). Decoding each token on its own would print replacement characters; instead the
//! decoder keeps the bytes of an unfinished character until the next token completes it. Bytes
//! that can never become valid are replaced by U+FFFD at once, exactly where
//! `String::from_utf8_lossy` over the whole output would put them, so the concatenated chunks plus
//! [`StreamDecoder::finish`] always equal [`Tokenizer::decode`] of all the ids.

use crate::Tokenizer;

/// Incremental decoder; see the module docs. One per generated sequence.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    /// Bytes received but not yet returned: at most an unfinished UTF-8 character (< 4 bytes).
    pending: Vec<u8>,
    render_special: bool,
}

impl StreamDecoder {
    /// A decoder that leaves control tokens out of the text (what a chat front end wants).
    pub fn new() -> Self {
        StreamDecoder { pending: Vec::new(), render_special: false }
    }

    /// A decoder that renders control tokens as their text, like `decode(ids, true)`.
    pub fn with_special_rendered() -> Self {
        StreamDecoder { pending: Vec::new(), render_special: true }
    }

    /// Add one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        tok.append_bytes(id, self.render_special, &mut self.pending);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.push_str(valid);
                    rest = &[];
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    // `valid` was just checked by from_utf8.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match error.error_len() {
                        // Bytes that no continuation can repair.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        // A character cut short by the end of the input: wait for more.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let total = self.pending.len();
        self.pending.drain(..total - keep);
        out
    }

    /// Return what is still held (an unfinished character becomes U+FFFD) and reset.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
