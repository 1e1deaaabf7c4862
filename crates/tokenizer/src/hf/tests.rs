//! Malformed `tokenizer.json` files are errors that name the bad part, never panics; and a
//! file that loads, however odd, encodes and decodes anything without panicking.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::spec::{ModelSpec, TokenizerSpec};
use super::{HfError, HfTokenizer};

/// A small tokenizer.json with most supported parts, for mutation tests (MiniLM's 466 KB would
/// spend the mutations on its vocabulary). Note that "Ab" gets id 10, as Hugging Face would give
/// it (the vocabulary has 10 entries), which collides with ","; decoding 10 gives "ab".
fn small_json() -> String {
    json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "[UNK]", "special": true, "normalized": false},
            {"id": 1, "content": "[CLS]", "special": true, "normalized": false, "rstrip": true},
            {"id": 2, "content": "[SEP]", "special": true, "normalized": false, "lstrip": true},
            {"id": 9, "content": "Ab", "special": false, "normalized": true, "single_word": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
             "strip_accents": null, "lowercase": true},
            {"type": "NFKC"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "BertPreTokenizer"}, {"type": "Digits", "individual_digits": true}]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 5,
                  "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "b": 4, "##b": 5,
                            "ab": 6, "1": 7, "中": 8, ",": 10}}
    })
    .to_string()
}

/// A small SentencePiece-style BPE file (Llama 2's layout) for the same mutation tests.
fn small_spm_bpe_json() -> String {
    json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<unk>", "special": true, "normalized": false},
            {"id": 1, "content": "<s>", "special": true, "normalized": false}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
                  "dropout": null, "ignore_merges": false,
                  "vocab": {"<unk>": 0, "<s>": 1, "<0xC3>": 2, "<0xA9>": 3, "\u{2581}": 4,
                            "a": 5, "b": 6, "ab": 7, "\u{2581}a": 8, "\u{2581}ab": 9},
                  "merges": ["a b", ["\u{2581}", "a"], ["\u{2581}a", "b"]]}
    })
    .to_string()
}

/// A small byte-level BPE file (Llama 3's layout, some bytes without a token) for the same
/// mutation tests.
fn small_byte_level_json() -> String {
    json!({
        "version": "1.0",
        "added_tokens": [{"id": 8, "content": "<|end|>", "special": true, "normalized": false}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": crate::scan::LLAMA3_REGEX},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "unk_token": null, "ignore_merges": true,
                  "vocab": {"a": 0, "b": 1, "\u{120}": 2, "ab": 3, "\u{120}a": 4,
                            "\u{c3}": 5, "\u{a9}": 6, "\u{c3}\u{a9}": 7},
                  "merges": ["a b", "\u{120} a", "\u{c3} \u{a9}"]}
    })
    .to_string()
}

/// The files the mutation tests start from.
fn small_files() -> [String; 3] {
    [small_json(), small_spm_bpe_json(), small_byte_level_json()]
}

/// A successfully loaded tokenizer must encode and decode anything without panicking, with
/// offsets inside the text, on character boundaries unless `trims` (byte-level offset trimming
/// counts characters but moves byte offsets, in Hugging Face too, and can land inside one).
fn exercise(tok: &HfTokenizer, text: &str, trims: bool) {
    for add_special in [false, true] {
        let encoding = tok.encode_with_offsets(text, add_special);
        assert_eq!(encoding.ids.len(), encoding.offsets.len());
        for &(start, end) in &encoding.offsets {
            assert!(start <= end && end <= text.len(), "{start}..{end} in {text:?}");
            assert!(trims || (text.is_char_boundary(start) && text.is_char_boundary(end)));
        }
        let _ = tok.decode(&encoding.ids, add_special);
        let _ = tok.pre_tokenize_str(text);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e3f64..1e3).prop_map(|n| json!(n)),
        "[a-zA-Z#\\[\\] ]{0,8}".prop_map(Value::String),
        prop::sample::select(vec![
            "WordPiece",
            "BPE",
            "Sequence",
            "BertNormalizer",
            "NFC",
            "Whitespace",
            "Digits",
            "TemplateProcessing",
            "RobertaProcessing",
            "A",
            "[CLS]",
            "Removed",
            "Contiguous",
            "Metaspace",
            "ByteLevel",
            "Split",
            "ByteFallback",
            "Strip",
            "Replace",
            "Prepend",
            "first",
            "never",
            "\u{2581}",
            "<0xC3>",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..4).prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A small change that keeps the JSON type, so that most mutated files still load and get
/// encoded: flip a bool, pick another small number or a meaningful string, drop an element.
fn tweak(value: &mut Value, seed: usize) {
    const WORDS: &[&str] = &[
        "",
        "A",
        "B",
        "[UNK]",
        "[CLS]",
        "##",
        "a",
        "ab",
        "Ab",
        "Removed",
        "Isolated",
        "Contiguous",
        "MergedWithPrevious",
        "MergedWithNext",
        "NFD",
        "NFKD",
        "NFC",
        "Lowercase",
        "StripAccents",
        "Whitespace",
        "WhitespaceSplit",
        "Punctuation",
        "Digits",
        "BertPreTokenizer",
        "BertProcessing",
        "RobertaProcessing",
        "ByteLevel",
        "Metaspace",
        "Split",
        "Fuse",
        "first",
        "always",
        "never",
        "\u{2581}",
        "<unk>",
        "<0xA9>",
        "\u{120}",
        "a b",
    ];
    match value {
        Value::Bool(b) => *b = !*b,
        Value::Number(_) => *value = json!(seed % 12),
        Value::String(s) => *s = WORDS[seed % WORDS.len()].to_string(),
        Value::Array(items) if !items.is_empty() => {
            let i = seed % items.len();
            if seed.is_multiple_of(2) {
                items.remove(i);
            } else {
                let copy = items[i].clone();
                items.push(copy);
            }
        }
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(seed % map.len()).cloned();
            if let Some(key) = key {
                map.remove(&key);
            }
        }
        _ => {}
    }
}

/// Every (pointer) path in a JSON value.
fn paths(value: &Value, here: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{here}/{key}");
                out.push(path.clone());
                paths(child, path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let path = format!("{here}/{i}");
                out.push(path.clone());
                paths(child, path, out);
            }
        }
        _ => {}
    }
}

/// `small_json()` with the value at `pointer` replaced (or removed, with `None`).
fn with(pointer: &str, value: Option<Value>) -> Result<HfTokenizer, HfError> {
    let mut spec: Value = serde_json::from_str(&small_json()).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match (spec.pointer_mut(parent).unwrap(), value) {
        (Value::Object(map), Some(v)) => {
            map.insert(key.to_string(), v);
        }
        (Value::Object(map), None) => {
            map.remove(key);
        }
        (Value::Array(items), Some(v)) => items[key.parse::<usize>().unwrap()] = v,
        _ => unreachable!(),
    }
    HfTokenizer::from_json(spec.to_string().as_bytes())
}

fn error_text(result: Result<HfTokenizer, HfError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_small_files_load_and_every_truncation_of_them_is_an_error() {
    for file in small_files() {
        let bytes = file.into_bytes();
        assert!(HfTokenizer::from_json(&bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(HfTokenizer::from_json(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn the_small_bpe_files_encode_as_hugging_face_does() {
    // Expected values: Hugging Face `tokenizers` 0.23.3 on the same files.
    let spm = HfTokenizer::from_json(small_spm_bpe_json().as_bytes()).unwrap();
    let encoding = spm.encode_with_offsets("ab é", true);
    // "a b" has the first rank, so "▁ab" is never made.
    assert_eq!(encoding.ids, [1, 4, 7, 4, 2, 3]);
    assert_eq!(encoding.offsets, [(0, 0), (0, 1), (0, 2), (2, 3), (3, 5), (3, 5)]);
    assert_eq!(spm.decode(&encoding.ids, true), "ab é");
    let byte_level = HfTokenizer::from_json(small_byte_level_json().as_bytes()).unwrap();
    let encoding = byte_level.encode_with_offsets("ab a\u{0}é<|end|>", false);
    // "\0" has no token: it is dropped, and "é" (5..7) is reported at 4..7.
    assert_eq!(encoding.ids, [3, 4, 7, 8]);
    assert_eq!(encoding.offsets, [(0, 2), (3, 4), (4, 7), (7, 14)]);
    assert_eq!(byte_level.decode(&encoding.ids, false), "ab aé<|end|>");
}

#[test]
fn wrong_types_name_their_path() {
    let cases: &[(&str, Value, &str)] = &[
        ("/model/vocab", json!(5), "model.vocab: expected an object of token -> id, got a number"),
        ("/model/vocab/a", json!("x"), "model.vocab[\"a\"]: expected an id (0..2^32), got a string"),
        ("/normalizer/normalizers/0/lowercase", json!("yes"), "normalizer.normalizers[0].lowercase: expected a bool, got a string"),
        ("/added_tokens/0", json!({"id": -1, "content": "[UNK]"}), "added_tokens[0].id: expected an id"),
        ("/pre_tokenizer", json!(3), "pre_tokenizer: expected an object, got a number"),
        ("/post_processor/single", json!({}), "post_processor.single: expected an array, got an object"),
        ("/model/max_input_chars_per_word", json!(1.5), "model.max_input_chars_per_word: expected a non-negative integer"),
        ("/version", json!("2.0"), "tokenizer.json.version: unknown version \"2.0\""),
        (
            "/post_processor/single/0",
            json!({"SpecialToken": {"id": "[MISSING]"}}),
            "post_processor.single: special token \"[MISSING]\" is not in special_tokens",
        ),
    ];
    for (pointer, value, expected) in cases {
        let got = error_text(with(pointer, Some(value.clone())));
        assert!(got.starts_with(expected), "{pointer}: {got}");
    }
}

#[test]
fn missing_vocabulary_model_or_unknown_token_is_an_error() {
    assert_eq!(error_text(with("/model/vocab", None)), "model.vocab is missing");
    assert_eq!(error_text(with("/model", None)), "model is missing");
    assert!(error_text(with("/model/vocab/[UNK]", None)).contains("\"[UNK]\" is not in the vocabulary"));
    assert!(error_text(Err(HfTokenizer::from_json(b"").unwrap_err())).starts_with("tokenizer.json is not valid JSON"));
}

#[test]
fn unsupported_parts_are_named() {
    let cases: &[(&str, Value, &str)] = &[
        ("/model/type", json!("Unigram"), "unsupported model \"Unigram\""),
        ("/model/type", json!("BPE"), "unsupported model.continuing_subword_prefix \"##\""),
        ("/normalizer", json!({"type": "Precompiled"}), "unsupported normalizer \"Precompiled\""),
        ("/pre_tokenizer", json!({"type": "UnicodeScripts"}), "unsupported pre_tokenizer \"UnicodeScripts\""),
        (
            "/pre_tokenizer",
            json!({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Foo"}]}),
            "unsupported pre_tokenizer.pretokenizers[1] \"Foo\"",
        ),
        ("/decoder", json!({"type": "CTC"}), "unsupported decoder \"CTC\""),
        ("/post_processor", json!({"type": "Bar"}), "unsupported post_processor \"Bar\""),
    ];
    for (pointer, value, expected) in cases {
        assert_eq!(&error_text(with(pointer, Some(value.clone()))), expected, "{pointer}");
    }
}

#[test]
fn bpe_model_is_parsed_into_the_spec() {
    let mut spec: Value = serde_json::from_str(&small_json()).unwrap();
    spec["model"] = json!({
        "type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", ["a", "b"]],
        "dropout": null, "unk_token": null, "byte_fallback": true
    });
    match TokenizerSpec::from_json(spec.to_string().as_bytes()).unwrap().model {
        ModelSpec::Bpe { vocab, merges, byte_fallback, .. } => {
            assert_eq!(vocab.len(), 3);
            assert_eq!(merges, [("a".into(), "b".into()), ("a".into(), "b".into())]);
            assert!(byte_fallback);
        }
        other => panic!("{other:?}"),
    }
    assert!(HfTokenizer::from_json(spec.to_string().as_bytes()).is_ok());
}

#[test]
fn bpe_dropout_and_bad_merges_are_errors_not_panics() {
    let base: Value = serde_json::from_str(&small_spm_bpe_json()).unwrap();
    let cases: &[(&str, Value, &str)] = &[
        ("/model/dropout", json!(0.1), "model.dropout: dropout 0.1 makes encoding random"),
        ("/model/merges/0", json!("a q"), "model.merges[0]: token \"q\" is not in the vocabulary"),
        ("/model/merges/0", json!(["b", "a"]), "model.merges[0]: token \"ba\" is not in the"),
        ("/model/merges/0", json!("ab"), "model.merges[0]: merge \"ab\" is not \"left right\""),
        ("/model/unk_token", json!("<nope>"), "model.unk_token: \"<nope>\" is not in the"),
        ("/model/vocab/a", json!(4294967295u64), "model.vocab[\"a\"]: id 4294967295 is too large"),
        ("/model/end_of_word_suffix", json!("</w>"), "unsupported model.end_of_word_suffix"),
        ("/decoder/decoders/0/pattern", json!({"Regex": "("}), "decoder.decoders[0].pattern: regex"),
        ("/normalizer/normalizers/1/pattern", json!({"Regex": "[" }), "normalizer.normalizers[1].pattern"),
    ];
    for (pointer, value, expected) in cases {
        let mut spec = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match spec.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.insert(key.to_string(), value.clone());
            }
            Some(Value::Array(items)) => items[key.parse::<usize>().unwrap()] = value.clone(),
            _ => panic!("{pointer}"),
        }
        let got = error_text(HfTokenizer::from_json(spec.to_string().as_bytes()));
        assert!(got.starts_with(expected), "{pointer}: {got}");
    }
    let mut spec = base.clone();
    spec["model"]["dropout"] = json!(0.0);
    assert!(HfTokenizer::from_json(spec.to_string().as_bytes()).is_ok(), "dropout 0 is none");
    spec["pre_tokenizer"] = json!({"type": "Metaspace", "prepend_scheme": "sometimes"});
    assert!(error_text(HfTokenizer::from_json(spec.to_string().as_bytes()))
        .starts_with("pre_tokenizer.prepend_scheme: unknown prepend scheme \"sometimes\""));
    spec["pre_tokenizer"] = json!({"type": "Split", "pattern": {"Regex": "(?<"}, "behavior": "Isolated"});
    assert!(error_text(HfTokenizer::from_json(spec.to_string().as_bytes())).starts_with("pre_tokenizer.pattern:"));
}

#[test]
fn model_without_type_is_recognised_by_its_fields_as_old_files_have_it() {
    let mut spec: Value = serde_json::from_str(&small_json()).unwrap();
    spec["model"].as_object_mut().unwrap().remove("type");
    let tok = HfTokenizer::from_json(spec.to_string().as_bytes()).unwrap();
    assert_eq!(tok.encode("a b1", false), [3, 4, 7]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn byte_mutations_never_panic(
        file in 0usize..3,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        text in "[a-zA-Z0-9 ,.\\[\\]#中é\u{0}\u{2581}<>|]{0,24}",
    ) {
        let mut bytes = small_files()[file].clone().into_bytes();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        if let Ok(tok) = HfTokenizer::from_json(&bytes) {
            exercise(&tok, &text, String::from_utf8_lossy(&bytes).contains("trim_offsets"));
        }
    }

    #[test]
    fn value_mutations_never_panic(
        file in 0usize..3,
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<u16>(), prop::option::weighted(0.3, json_value())),
            1..4,
        ),
        text in "[a-zA-Z0-9 ,.\\[\\]#中é\u{0}\u{2581}<>|]{0,24}",
    ) {
        let mut spec: Value = serde_json::from_str(&small_files()[file]).unwrap();
        for (pick, seed, replacement) in picks {
            let mut all = Vec::new();
            paths(&spec, String::new(), &mut all);
            let path = &all[pick.index(all.len())];
            if let Some(slot) = spec.pointer_mut(path) {
                match replacement {
                    Some(value) => *slot = value,
                    None => tweak(slot, seed as usize),
                }
            }
        }
        let json = spec.to_string();
        if let Ok(tok) = HfTokenizer::from_json(json.as_bytes()) {
            exercise(&tok, &text, json.contains("\"trim_offsets\":true"));
        }
    }
}

#[test]
fn split_regex_that_gives_up_is_reported_or_left_uncut() {
    let mut spec: Value = serde_json::from_str(&small_byte_level_json()).unwrap();
    // Exponential backtracking: fancy-regex stops after its step limit.
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"] = json!({"Regex": "(?:a(?=a)|a)+(?=b)"});
    let tok = HfTokenizer::from_json(spec.to_string().as_bytes()).unwrap();
    let text = format!("{}c", "a".repeat(40));
    let error = tok.try_encode_with_offsets(&text, false).unwrap_err();
    assert!(matches!(error, HfError::Split(_)), "{error}");
    // The piece is kept whole: 40 "a" (there is no "a a" merge), and "c" has no token.
    let encoding = tok.encode_with_offsets(&text, false);
    assert_eq!(encoding.ids, vec![0; 40]);
    assert_eq!(encoding.offsets[39], (39, 40));
    assert_eq!(tok.try_encode_with_offsets("aab", false).unwrap().ids, [0, 0, 1]);
}
