//! Unit tests of the SentencePiece-style tokenizer on small hand-made vocabularies.

use super::*;
use proptest::prelude::*;

use TokenType::{Byte, Control, Normal, Unknown, Unused, UserDefined};

/// A config from (text, score, type) triples; no special ids, no flags.
fn config(entries: &[(&str, f32, TokenType)]) -> SpmConfig {
    SpmConfig {
        tokens: entries.iter().map(|e| e.0.to_string()).collect(),
        scores: entries.iter().map(|e| e.1).collect(),
        token_types: entries.iter().map(|e| e.2).collect(),
        ..SpmConfig::default()
    }
}

fn build(entries: &[(&str, f32, TokenType)]) -> SpmTokenizer {
    SpmTokenizer::new(config(entries)).expect("valid vocabulary")
}

/// Texts of `ids`, to make failures readable.
fn texts(tok: &SpmTokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.id_to_token(id).unwrap_or("?").to_string()).collect()
}

/// All 256 byte tokens, ids 0..256.
fn byte_entries() -> Vec<(String, f32, TokenType)> {
    (0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, Byte)).collect()
}

fn with_bytes(entries: &[(&str, f32, TokenType)]) -> SpmTokenizer {
    let bytes = byte_entries();
    let mut all: Vec<(&str, f32, TokenType)> = bytes.iter().map(|(t, s, k)| (t.as_str(), *s, *k)).collect();
    all.extend_from_slice(entries);
    build(&all)
}

#[test]
fn highest_score_merges_first_then_leftmost_on_ties() {
    let tok =
        build(&[("a", -10.0, Normal), ("b", -10.0, Normal), ("c", -10.0, Normal), ("ab", -2.0, Normal), ("bc", -1.0, Normal), ("aa", -3.0, Normal)]);
    // "bc" outscores "ab".
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["a", "bc"]);
    // Equal pairs: the leftmost merges first, so "aaa" is [aa, a], never [a, aa].
    assert_eq!(texts(&tok, &tok.encode("aaa", false, false)), ["aa", "a"]);
}

#[test]
fn negative_zero_score_ties_with_zero_as_llama_cpp_compares_floats() {
    // Gemma's first merge "▁t" has score -0.0 and its byte tokens 0.0: a total order on floats
    // would rank them, llama.cpp's `<` does not, and the leftmost pair wins.
    let tok = build(&[("a", -5.0, Normal), ("b", -5.0, Normal), ("c", -5.0, Normal), ("ab", 0.0, Normal), ("bc", -0.0, Normal)]);
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["ab", "c"]);
    let tok = build(&[("a", -5.0, Normal), ("b", -5.0, Normal), ("c", -5.0, Normal), ("ab", -0.0, Normal), ("bc", 0.0, Normal)]);
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["ab", "c"]);
}

#[test]
fn spaces_become_metaspace_and_merge_with_the_next_word() {
    let tok =
        build(&[("▁", -9.0, Normal), ("h", -9.0, Normal), ("i", -9.0, Normal), ("▁h", -2.0, Normal), ("▁hi", -1.0, Normal), ("hi", -3.0, Normal)]);
    assert_eq!(texts(&tok, &tok.encode("hi hi", false, false)), ["hi", "▁hi"]);
    assert_eq!(tok.decode(&tok.encode("hi hi", false, false), false), "hi hi");
}

#[test]
fn unknown_character_falls_back_to_its_utf8_bytes() {
    let tok = with_bytes(&[("a", -1.0, Normal)]);
    let ids = tok.encode("a日a", false, false);
    // "日" is E6 97 A5; byte token ids equal the byte values here.
    assert_eq!(ids, [256, 0xE6, 0x97, 0xA5, 256]);
    assert_eq!(tok.decode(&ids, false), "a日a");
}

#[test]
fn missing_byte_token_falls_back_to_unknown_or_is_dropped() {
    let mut with_unk = config(&[("<unk>", 0.0, Unknown), ("a", -1.0, Normal), ("<0xC3>", 0.0, Byte)]);
    with_unk.unk_id = Some(0);
    let tok = SpmTokenizer::new(with_unk).expect("valid");
    // "é" is C3 A9: C3 has a byte token, A9 does not.
    assert_eq!(tok.encode("aé", false, false), [1, 2, 0]);
    let tok = build(&[("a", -1.0, Normal), ("<0xC3>", 0.0, Byte)]);
    assert_eq!(tok.encode("aé", false, false), [0, 1]);
}

#[test]
fn single_byte_text_token_serves_byte_fallback_like_llama_cpp() {
    // llama.cpp's byte_to_token tries "<0xNN>" first, then the byte as text.
    let tok = build(&[("x", -1.0, Normal), ("\u{1}", -1.0, Normal)]);
    assert_eq!(tok.encode("\u{1}", false, false), [1]);
}

#[test]
fn control_tokens_parse_only_on_request_but_user_defined_always() {
    let tok = build(&[
        ("<ctrl>", 0.0, Control),
        ("<ud>", 0.0, UserDefined),
        ("<", -1.0, Normal),
        (">", -1.0, Normal),
        ("c", -1.0, Normal),
        ("t", -1.0, Normal),
        ("r", -1.0, Normal),
        ("l", -1.0, Normal),
    ]);
    assert_eq!(tok.encode("<ctrl><ud>", false, true), [0, 1]);
    assert_eq!(texts(&tok, &tok.encode("<ctrl><ud>", false, false)), ["<", "c", "t", "r", "l", ">", "<ud>"]);
}

#[test]
fn longest_special_token_wins_at_a_position() {
    let tok = build(&[("  ", 0.0, UserDefined), ("   ", 0.0, UserDefined), ("▁", -1.0, Normal), ("x", -1.0, Normal)]);
    // Five spaces: the 3-space token, then the 2-space one (Gemma's runs of whitespace).
    assert_eq!(tok.encode("x     x", false, false), [3, 1, 0, 3]);
    // A single space left over is plain text, hence "▁".
    assert_eq!(tok.encode("x    x", false, false), [3, 1, 2, 3]);
}

#[test]
fn space_prefix_goes_on_text_that_starts_or_follows_a_special_token() {
    let mut cfg = config(&[("<s>", 0.0, Control), ("▁", -3.0, Normal), ("a", -3.0, Normal), ("▁a", -1.0, Normal)]);
    cfg.add_space_prefix = true;
    cfg.bos_id = Some(0);
    cfg.add_bos = true;
    let tok = SpmTokenizer::new(cfg).expect("valid");
    assert_eq!(tok.encode("a", false, false), [3]);
    assert_eq!(tok.encode("a", true, false), [0, 3]);
    assert_eq!(tok.encode("a<s>a", false, true), [3, 0, 3]);
    // Decoding drops the prefix of the first token only.
    assert_eq!(tok.decode(&[3, 3], false), "a a");
    // As llama.cpp: after a leading BOS nothing is stripped (BOS took the first place).
    assert_eq!(tok.decode(&[0, 3], false), " a");
}

#[test]
fn add_special_adds_bos_and_eos_as_configured() {
    let mut cfg = config(&[("<bos>", 0.0, Control), ("<eos>", 0.0, Control), ("a", -1.0, Normal)]);
    cfg.bos_id = Some(0);
    cfg.eos_id = Some(1);
    cfg.add_bos = true;
    cfg.add_eos = true;
    let tok = SpmTokenizer::new(cfg).expect("valid");
    assert_eq!(tok.encode("a", true, false), [0, 2, 1]);
    assert_eq!(tok.encode("a", false, false), [2]);
    assert_eq!(tok.encode("", true, false), [0, 1]);
    assert!(tok.encode("", false, false).is_empty());
}

#[test]
fn decode_renders_control_only_on_request_and_never_unused() {
    let tok = build(&[
        ("<c>", 0.0, Control),
        ("<u>", 0.0, Unused),
        ("▁x", -1.0, Normal),
        ("<b>", 0.0, UserDefined),
        ("<0xE2>", 0.0, Byte),
        ("<0x82>", 0.0, Byte),
        ("<0xAC>", 0.0, Byte),
    ]);
    let ids = [0, 1, 2, 3, 4, 5, 6];
    assert_eq!(tok.decode(&ids, false), " x<b>€");
    assert_eq!(tok.decode(&ids, true), "<c> x<b>€");
    // A cut UTF-8 sequence decodes to U+FFFD rather than failing.
    assert_eq!(tok.decode(&[4, 5], false), "\u{FFFD}");
    assert_eq!(tok.decode(&[99], true), "");
}

#[test]
fn duplicate_token_text_resolves_to_the_last_id_as_in_llama_cpp() {
    let tok = build(&[("a", -1.0, Normal), ("a", -1.0, Normal)]);
    assert_eq!(tok.token_to_id("a"), Some(1));
    assert_eq!(tok.encode("a", false, false), [1]);
}

#[test]
fn malformed_vocabularies_are_errors_with_context() {
    let error = |cfg: SpmConfig| SpmTokenizer::new(cfg).expect_err("must be rejected");
    assert_eq!(error(SpmConfig::default()), SpmError::Vocabulary(TokenizerError::EmptyVocabulary));

    let mut cfg = config(&[("a", 0.0, Normal), ("b", 0.0, Normal)]);
    cfg.scores.pop();
    assert_eq!(error(cfg), SpmError::ScoreCountMismatch { tokens: 2, scores: 1 });

    let mut cfg = config(&[("a", 0.0, Normal), ("b", 0.0, Normal)]);
    cfg.token_types.push(Normal);
    assert!(matches!(error(cfg), SpmError::Vocabulary(TokenizerError::LengthMismatch { tokens: 2, token_types: 3 })));

    let cfg = config(&[("a", 0.0, Normal), ("b", f32::NAN, Normal)]);
    assert_eq!(error(cfg), SpmError::ScoreNotANumber { id: 1, text: "b".into() });

    for bad in ["<0x4>", "<0x4G>", "<0x041>", "0x41", "<0x41"] {
        let cfg = config(&[("a", 0.0, Normal), (bad, 0.0, Byte)]);
        assert_eq!(error(cfg), SpmError::MalformedByteToken { id: 1, text: bad.into() }, "{bad}");
    }

    let mut cfg = config(&[("a", 0.0, Normal)]);
    cfg.unk_id = Some(1);
    let message = error(cfg).to_string();
    assert!(message.contains("unknown token id 1"), "{message}");

    let mut cfg = config(&[("a", 0.0, Normal)]);
    cfg.add_bos = true;
    assert_eq!(error(cfg), SpmError::MissingSpecialToken { flag: "add_bos", name: "bos" });
}

#[test]
fn infinite_scores_are_ordered_not_rejected() {
    let tok =
        build(&[("a", -1.0, Normal), ("b", -1.0, Normal), ("c", -1.0, Normal), ("ab", f32::NEG_INFINITY, Normal), ("bc", f32::INFINITY, Normal)]);
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["a", "bc"]);
}

/// One letter repeated: every pair is a candidate at every level of merging, the worst case for
/// a loop that rescans all pairs after each merge.
#[test]
fn merge_work_is_linear_in_the_length_of_one_letter_repeated() {
    let runs: Vec<String> = (1..=6).map(|k| "a".repeat(1 << (k - 1))).collect();
    let entries: Vec<(&str, f32, TokenType)> = runs.iter().enumerate().map(|(k, run)| (run.as_str(), k as f32, Normal)).collect();
    let tok = build(&entries);
    let mut per_char = Vec::new();
    for n in [1_000usize, 10_000, 100_000] {
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        tok.encode_into(&"a".repeat(n), false, false, &mut scratch, &mut out);
        // 32 a's make the longest token.
        assert_eq!(out.len(), n.div_ceil(32), "n = {n}");
        let stats = scratch.stats();
        // Each merge pushes at most two pairs and each symbol starts one: pops <= pushes <= 3n.
        assert!(stats.pops <= stats.pushes, "{stats:?}");
        assert!(stats.pushes <= 3 * n as u64, "n = {n}: {stats:?}");
        assert!(stats.lookups <= 3 * n as u64, "n = {n}: {stats:?}");
        per_char.push((stats.pushes + stats.pops + stats.lookups) as f64 / n as f64);
    }
    assert!(per_char[2] <= per_char[0] * 1.1, "work per character grows with length: {per_char:?}");
}

/// llama.cpp's loop as written: rescan every adjacent pair after each merge, take the highest
/// score, the leftmost on ties. Symbols are strings; unknown leftovers fall back to bytes.
fn naive(tok: &SpmTokenizer, text: &str) -> Vec<u32> {
    let piece = text.replace(' ', "▁");
    let mut symbols: Vec<String> = piece.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..symbols.len().saturating_sub(1) {
            let joined = format!("{}{}", symbols[i], symbols[i + 1]);
            if let Some(id) = tok.token_to_id(&joined) {
                let score = tok.score(id).unwrap_or(f32::NEG_INFINITY);
                // Strictly greater keeps the leftmost; `>` on floats also ties -0.0 with 0.0.
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = symbols.remove(i + 1);
        symbols[i].push_str(&right);
    }
    let mut out = Vec::new();
    for symbol in &symbols {
        match tok.token_to_id(symbol) {
            Some(id) => out.push(id),
            None => tok.byte_fallback(symbol.as_bytes(), &mut out),
        }
    }
    out
}

/// A random vocabulary over a small alphabet (with "▁" and a 3-byte character), scores drawn
/// from a few values so that ties are common, and all byte tokens.
fn random_tokenizer(words: &[(Vec<usize>, i8)]) -> SpmTokenizer {
    const ALPHABET: [&str; 5] = ["a", "b", "▁", "é", "€"];
    let mut entries: Vec<(String, f32, TokenType)> = byte_entries();
    for (i, letter) in ALPHABET.iter().enumerate().take(4) {
        entries.push((letter.to_string(), -100.0 - i as f32, Normal));
    }
    for (letters, score) in words {
        let text: String = letters.iter().map(|&i| ALPHABET[i % ALPHABET.len()]).collect();
        let score = if *score == 0 { -0.0 } else { f32::from(*score % 4) };
        entries.push((text, score, Normal));
    }
    let borrowed: Vec<(&str, f32, TokenType)> = entries.iter().map(|(t, s, k)| (t.as_str(), *s, *k)).collect();
    build(&borrowed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn heap_merge_equals_naive_rescanning_merge(
        words in prop::collection::vec((prop::collection::vec(0usize..5, 2..5), any::<i8>()), 0..30),
        letters in prop::collection::vec(0usize..6, 0..40),
    ) {
        let tok = random_tokenizer(&words);
        const TEXT_ALPHABET: [&str; 6] = ["a", "b", " ", "é", "€", "日"];
        let text: String = letters.iter().map(|&i| TEXT_ALPHABET[i]).collect();
        prop_assert_eq!(tok.encode(&text, false, false), naive(&tok, &text));
        // Byte fallback and "▁" make every text come back.
        prop_assert_eq!(tok.decode(&tok.encode(&text, false, false), false), text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Pieces long enough for the priority-bucket loop (which falls back to the heap when a
    /// random vocabulary's scores are out of merge order): still the naive merge's result.
    #[test]
    fn long_pieces_equal_naive_rescanning_merge(
        words in prop::collection::vec((prop::collection::vec(0usize..5, 2..5), any::<i8>()), 0..30),
        letters in prop::collection::vec(0usize..5, 2048..2400),
    ) {
        let tok = random_tokenizer(&words);
        const TEXT_ALPHABET: [&str; 5] = ["a", "b", "é", "€", "日"];
        let text: String = letters.iter().map(|&i| TEXT_ALPHABET[i]).collect();
        prop_assert_eq!(tok.encode(&text, false, false), naive(&tok, &text));
    }
}

#[test]
fn text_is_not_cut_before_a_metaspace_that_a_token_spans() {
    // Gemma has ">▁</": the word cut before "▁" must not separate '>' from "▁</".
    let tok = build(&[
        (">", -9.0, Normal),
        ("▁", -9.0, Normal),
        ("<", -9.0, Normal),
        ("/", -9.0, Normal),
        ("▁<", -3.0, Normal),
        ("▁</", -2.0, Normal),
        (">▁</", -1.0, Normal),
    ]);
    assert_eq!(texts(&tok, &tok.encode("> </", false, false)), [">▁</"]);
    assert_eq!(texts(&tok, &tok.encode("/ </", false, false)), ["/", "▁</"]);
}

#[test]
fn word_cache_never_serves_one_tokenizer_the_words_of_another() {
    let joined = build(&[("a", -5.0, Normal), ("b", -5.0, Normal), ("ab", -1.0, Normal)]);
    let apart = build(&[("a", -5.0, Normal), ("b", -5.0, Normal), ("abc", -1.0, Normal)]);
    let mut scratch = Scratch::default();
    for _ in 0..2 {
        for (tok, expected) in [(&joined, vec!["ab"]), (&apart, vec!["a", "b"])] {
            let mut out = Vec::new();
            tok.encode_into("ab", false, false, &mut scratch, &mut out);
            assert_eq!(texts(tok, &out), expected);
            assert_eq!(texts(tok, &tok.encode("ab", false, false)), expected);
        }
    }
}
