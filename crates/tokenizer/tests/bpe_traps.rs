//! Encode/decode behaviour on a small hand-made byte-level vocabulary, with a test per trap.

use proptest::prelude::*;
use tokenizer::byte_level::byte_to_char;
use tokenizer::{BpeConfig, StreamDecoder, TokenType, Tokenizer, TokenizerError};

/// Bytes that have no token, as in SmolLM2's vocabulary.
const MISSING_BYTES: &[u8] = &[4, 6, 19, 20, 22, 29, 192, 193, 241, 242, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255];

const SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Merges as pairs of plain-text pieces; each adds the token left+right.
const MERGES: &[(&[u8], &[u8])] = &[
    (b"b", b"c"),
    (b"a", b"b"),
    (b"a", b"a"),
    (b" ", b"t"),
    (b"h", b"e"),
    (b" t", b"he"),
    (b"i", b"t"),
    (b"'", b"s"),
    (b"!", b"!"),
    (b"\xF0", b"\x9F"),
    (b"\xF0\x9F", b"\x98"),
    (b" ", b" "),
];

/// The byte-level spelling of raw bytes.
fn spell(raw: &[u8]) -> String {
    raw.iter().map(|&b| byte_to_char(b)).collect()
}

fn config() -> BpeConfig {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut token_types = vec![TokenType::Control; SPECIALS.len()];
    for byte in 0..=255u8 {
        if !MISSING_BYTES.contains(&byte) {
            tokens.push(byte_to_char(byte).to_string());
            token_types.push(TokenType::Normal);
        }
    }
    let mut merges = Vec::new();
    for (left, right) in MERGES {
        merges.push(format!("{} {}", spell(left), spell(right)));
        tokens.push(format!("{}{}", spell(left), spell(right)));
        token_types.push(TokenType::Normal);
    }
    BpeConfig {
        tokens,
        token_types,
        merges,
        pre_tokenizer: "smollm".into(),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        pad_id: Some(2),
        add_bos: false,
        add_eos: false,
    }
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_bpe(config()).expect("the test vocabulary is valid")
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    byte_id(tok, text.as_bytes())
}

fn byte_id(tok: &Tokenizer, raw: &[u8]) -> u32 {
    tok.token_to_id(&spell(raw)).unwrap_or_else(|| panic!("no token for {raw:?}"))
}

fn ids(tok: &Tokenizer, pieces: &[&str]) -> Vec<u32> {
    pieces.iter().map(|piece| id(tok, piece)).collect()
}

#[test]
fn lowest_rank_merges_first() {
    let tok = tokenizer();
    // "b c" has rank 0, "a b" rank 1: abc -> a + bc, not ab + c.
    assert_eq!(tok.encode("abc", false), ids(&tok, &["a", "bc"]));
}

#[test]
fn equal_ranks_merge_leftmost_first() {
    let tok = tokenizer();
    assert_eq!(tok.encode("aaa", false), ids(&tok, &["aa", "a"]));
    assert_eq!(tok.encode("aaaaa", false), ids(&tok, &["aa", "aa", "a"]));
}

#[test]
fn merges_chain_into_longer_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.encode(" the", false), ids(&tok, &[" the"]));
    assert_eq!(tok.encode("it's", false), ids(&tok, &["it", "'s"]));
}

#[test]
fn missing_byte_token_is_dropped_without_merging_across_the_gap() {
    let tok = tokenizer();
    assert_eq!(tok.encode("a\x04b", false), ids(&tok, &["a", "b"]));
    assert_eq!(tok.encode("\x04\x04", false), Vec::<u32>::new());
    // "a\x04a" is cut by the pre-tokenizer, but "!\x04!" is a single punctuation piece: the gap
    // inside it must not let the two "!" merge (llama.cpp keeps the missing byte as a barrier).
    assert_eq!(tok.encode("aa\x04aa", false), ids(&tok, &["aa", "aa"]));
    assert_eq!(tok.encode("!!", false), ids(&tok, &["!!"]));
    assert_eq!(tok.encode("!\x04!", false), ids(&tok, &["!", "!"]));
}

#[test]
fn double_space_before_word_splits_as_the_regex_does() {
    let tok = tokenizer();
    // Pieces "a", " ", " the": the first space does not merge with the second.
    assert_eq!(tok.encode("a  the", false), ids(&tok, &["a", " ", " the"]));
    assert_eq!(tok.encode("a  ", false), ids(&tok, &["a", "  "]));
}

#[test]
fn digits_are_encoded_one_by_one() {
    let tok = tokenizer();
    assert_eq!(tok.encode("2024", false), ids(&tok, &["2", "0", "2", "4"]));
}

#[test]
fn contractions_are_case_sensitive() {
    let tok = tokenizer();
    assert_eq!(tok.encode("'s", false), ids(&tok, &["'s"]));
    // "'S" is no contraction: "'" and "S" are separate pieces.
    assert_eq!(tok.encode("'S", false), ids(&tok, &["'", "S"]));
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let tok = tokenizer();
    assert_eq!(tok.encode("<|im_start|>it", true), vec![1, id(&tok, "it")]);
    let plain = tok.encode("<|im_start|>", false);
    assert!(!plain.contains(&1));
    assert_eq!(tok.decode(&plain, false), "<|im_start|>");
}

#[test]
fn encode_never_adds_bos_and_encode_with_special_follows_the_flags() {
    let mut config = config();
    config.add_bos = true;
    config.add_eos = true;
    let tok = Tokenizer::from_bpe(config).expect("valid");
    assert_eq!(tok.encode("it", false), vec![id(&tok, "it")]);
    assert_eq!(tok.encode_with_special("it", false), vec![1, id(&tok, "it"), 2]);
    assert_eq!(tokenizer().encode_with_special("it", false), vec![id(&tok, "it")]);
}

#[test]
fn decode_renders_control_tokens_only_on_request_and_skips_unknown_ids() {
    let tok = tokenizer();
    let text = [vec![1], tok.encode("it", false), vec![2, 999_999]].concat();
    assert_eq!(tok.decode(&text, false), "it");
    assert_eq!(tok.decode(&text, true), "<|im_start|>it<|im_end|>");
}

#[test]
fn token_bytes_are_raw_bytes_for_normal_tokens_and_text_for_control() {
    let tok = tokenizer();
    assert_eq!(tok.token_bytes(id(&tok, " the")), Some(&b" the"[..]));
    assert_eq!(tok.token_bytes(1), Some(&b"<|im_start|>"[..]));
    assert_eq!(tok.token_bytes(u32::MAX), None);
    assert_eq!(tok.id_to_token(id(&tok, " the")), Some("Ġthe"));
}

#[test]
fn end_of_generation_covers_eos_and_known_end_tokens() {
    let tok = tokenizer();
    assert!(tok.is_end_of_generation(2));
    assert!(tok.is_end_of_generation(0), "<|endoftext|> also ends a generation, as in llama.cpp");
    assert!(!tok.is_end_of_generation(1));
}

#[test]
fn stream_decoder_holds_back_an_emoji_split_across_tokens() {
    let tok = tokenizer();
    let emoji = tok.encode("😀!", false);
    // F0 9F 98 | 80 | !  -- the first token is an unfinished character.
    assert_eq!(emoji.len(), 3);
    let mut stream = StreamDecoder::new();
    assert_eq!(stream.push(&tok, emoji[0]), "");
    assert_eq!(stream.push(&tok, emoji[1]), "😀");
    assert_eq!(stream.push(&tok, emoji[2]), "!");
    assert_eq!(stream.finish(), "");
}

#[test]
fn stream_decoder_flushes_an_unfinished_tail_as_replacement() {
    let tok = tokenizer();
    let mut stream = StreamDecoder::new();
    assert_eq!(stream.push(&tok, byte_id(&tok, b"\xF0\x9F")), "");
    assert_eq!(stream.push(&tok, id(&tok, "a")), "\u{fffd}a");
    assert_eq!(stream.push(&tok, byte_id(&tok, b"\xF0\x9F")), "");
    assert_eq!(stream.finish(), "\u{fffd}");
}

#[test]
fn unsupported_pre_tokenizer_is_named_in_the_error() {
    let mut config = config();
    config.pre_tokenizer = "viking".into();
    let error = Tokenizer::from_bpe(config).expect_err("viking is not supported");
    assert_eq!(error, TokenizerError::UnsupportedPreTokenizer { name: "viking".into() });
    assert!(error.to_string().contains("\"viking\""));
    assert!(!error.to_string().contains('\n'));
}

#[test]
fn invalid_configs_are_rejected() {
    let mut bad = config();
    bad.merges.push("zz".into());
    assert!(matches!(Tokenizer::from_bpe(bad), Err(TokenizerError::MalformedMerge { .. })));
    let mut bad = config();
    bad.merges.push("x qq".into());
    assert!(matches!(Tokenizer::from_bpe(bad), Err(TokenizerError::MergeTokenMissing { token, .. }) if token == "qq"));
    let mut bad = config();
    bad.merges.push("x y".into());
    assert!(matches!(Tokenizer::from_bpe(bad), Err(TokenizerError::MergeTokenMissing { token, .. }) if token == "xy"));
    let mut bad = config();
    bad.token_types.pop();
    assert!(matches!(Tokenizer::from_bpe(bad), Err(TokenizerError::LengthMismatch { .. })));
    let mut bad = config();
    bad.eos_id = Some(1 << 20);
    assert!(matches!(Tokenizer::from_bpe(bad), Err(TokenizerError::IdOutOfRange { name: "eos", .. })));
}

/// Characters whose UTF-8 bytes all have tokens, from several scripts, plus the special texts.
fn encodable_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => any::<char>().prop_filter("every byte has a token", |c| {
            c.to_string().bytes().all(|b| !MISSING_BYTES.contains(&b))
        }).prop_map(|c| c.to_string()),
        4 => prop::sample::select(vec!["a", "b", "c", "the", " ", "  ", "\n", "\t", "'s", "'S", "7", "😀", "é", "中"])
            .prop_map(str::to_string),
        1 => prop::sample::select(SPECIALS.to_vec()).prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode(text in encodable_text()) {
        let tok = tokenizer();
        prop_assert_eq!(tok.decode(&tok.encode(&text, false), false), text.clone());
        prop_assert_eq!(tok.decode(&tok.encode(&text, true), true), text);
    }

    #[test]
    fn offsets_cover_the_input_in_order(text in any::<String>(), special in any::<bool>()) {
        let tok = tokenizer();
        let (ids, offsets) = tok.encode_with_offsets(&text, special);
        prop_assert_eq!(&ids, &tok.encode(&text, special));
        let mut last = 0;
        let mut covered = 0;
        for (&id, &(start, end)) in ids.iter().zip(&offsets) {
            prop_assert!(last <= start && start <= end && end <= text.len());
            prop_assert_eq!(&text.as_bytes()[start..end], tok.token_bytes(id).unwrap());
            covered += end - start;
            last = end;
        }
        // Every byte this vocabulary has a token for is covered: only missing bytes are not.
        let missing = text.bytes().filter(|&b| tok.token_to_id(&byte_to_char(b).to_string()).is_none()).count();
        prop_assert_eq!(covered + missing, text.len());
    }

    #[test]
    fn stream_decoder_matches_decode(text in any::<String>()) {
        let tok = tokenizer();
        let ids = tok.encode(&text, true);
        let mut stream = StreamDecoder::new();
        let mut streamed: String = ids.iter().map(|&id| stream.push(&tok, id)).collect();
        streamed.push_str(&stream.finish());
        prop_assert_eq!(streamed, tok.decode(&ids, false));
    }
}

/// llama.cpp's Llama 3 family takes a piece that is a token whole even where no merge reaches it
/// (`ignore_merges`); other pre-tokenizers merge as the rules say.
#[test]
fn llama3_family_ignores_merges_for_whole_tokens() {
    let tokens: Vec<String> = ["x", "y", "z", "xy", "xyz"].iter().map(|s| s.to_string()).collect();
    let build = |pre: &str| {
        Tokenizer::from_bpe(BpeConfig {
            token_types: vec![TokenType::Normal; tokens.len()],
            tokens: tokens.clone(),
            merges: vec!["x y".into()],
            pre_tokenizer: pre.into(),
            ..BpeConfig::default()
        })
        .expect("valid vocabulary")
    };
    assert_eq!(build("llama-bpe").encode("xyz", false), [4]);
    assert_eq!(build("qwen2").encode("xyz", false), [3, 2]);
    assert_eq!(build("dbrx").encode("xyz", false), [3, 2]);
}

/// Every llama.cpp pre-tokenizer name this crate knows builds a tokenizer, and each piece list
/// covers its text.
#[test]
fn every_known_pre_tokenizer_name_builds_and_covers_text() {
    let text = "Hello, world! 12345 ½ 中文 한국어 it's\r\n\t  x\u{2009}y\u{3000}z 😀 ";
    for name in tokenizer::PreTokenizer::names() {
        let mut config = config();
        config.pre_tokenizer = name.into();
        Tokenizer::from_bpe(config).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pre = tokenizer::PreTokenizer::from_name(name).expect("known name");
        assert_eq!(pre.pieces(text).collect::<String>(), text, "{name}");
    }
}
