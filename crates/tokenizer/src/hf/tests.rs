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

/// A successfully loaded tokenizer must encode and decode anything without panicking, with
/// offsets inside the text on character boundaries.
fn exercise(tok: &HfTokenizer, text: &str) {
    for add_special in [false, true] {
        let encoding = tok.encode_with_offsets(text, add_special);
        assert_eq!(encoding.ids.len(), encoding.offsets.len());
        for &(start, end) in &encoding.offsets {
            assert!(
                start <= end && end <= text.len(),
                "{start}..{end} in {text:?}"
            );
            assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
        }
        let _ = tok.decode(&encoding.ids, add_special);
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
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
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
fn the_small_file_loads_and_every_truncation_of_it_is_an_error() {
    let bytes = small_json().into_bytes();
    assert!(HfTokenizer::from_json(&bytes).is_ok());
    for cut in 0..bytes.len() {
        assert!(
            HfTokenizer::from_json(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn wrong_types_name_their_path() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "/model/vocab",
            json!(5),
            "model.vocab: expected an object of token -> id, got a number",
        ),
        (
            "/model/vocab/a",
            json!("x"),
            "model.vocab[\"a\"]: expected an id (0..2^32), got a string",
        ),
        (
            "/normalizer/normalizers/0/lowercase",
            json!("yes"),
            "normalizer.normalizers[0].lowercase: expected a bool, got a string",
        ),
        (
            "/added_tokens/0",
            json!({"id": -1, "content": "[UNK]"}),
            "added_tokens[0].id: expected an id",
        ),
        (
            "/pre_tokenizer",
            json!(3),
            "pre_tokenizer: expected an object, got a number",
        ),
        (
            "/post_processor/single",
            json!({}),
            "post_processor.single: expected an array, got an object",
        ),
        (
            "/model/max_input_chars_per_word",
            json!(1.5),
            "model.max_input_chars_per_word: expected a non-negative integer",
        ),
        (
            "/version",
            json!("2.0"),
            "tokenizer.json.version: unknown version \"2.0\"",
        ),
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
    assert_eq!(
        error_text(with("/model/vocab", None)),
        "model.vocab is missing"
    );
    assert_eq!(error_text(with("/model", None)), "model is missing");
    assert!(
        error_text(with("/model/vocab/[UNK]", None)).contains("\"[UNK]\" is not in the vocabulary")
    );
    assert!(error_text(Err(HfTokenizer::from_json(b"").unwrap_err()))
        .starts_with("tokenizer.json is not valid JSON"));
}

#[test]
fn unsupported_parts_are_named() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "/model/type",
            json!("Unigram"),
            "unsupported model \"Unigram\"",
        ),
        ("/model/type", json!("BPE"), "unsupported model \"BPE\""),
        (
            "/normalizer",
            json!({"type": "Precompiled"}),
            "unsupported normalizer \"Precompiled\"",
        ),
        (
            "/pre_tokenizer",
            json!({"type": "ByteLevel"}),
            "unsupported pre_tokenizer \"ByteLevel\"",
        ),
        (
            "/pre_tokenizer",
            json!({"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Foo"}]}),
            "unsupported pre_tokenizer.pretokenizers[1] \"Foo\"",
        ),
        (
            "/decoder",
            json!({"type": "ByteLevel"}),
            "unsupported decoder \"ByteLevel\"",
        ),
        (
            "/post_processor",
            json!({"type": "Bar"}),
            "unsupported post_processor \"Bar\"",
        ),
    ];
    for (pointer, value, expected) in cases {
        assert_eq!(
            &error_text(with(pointer, Some(value.clone()))),
            expected,
            "{pointer}"
        );
    }
}

#[test]
fn bpe_model_is_parsed_into_the_spec_before_being_refused() {
    let mut spec: Value = serde_json::from_str(&small_json()).unwrap();
    spec["model"] = json!({
        "type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", ["a", "b"]],
        "dropout": null, "unk_token": null, "byte_fallback": true
    });
    match TokenizerSpec::from_json(spec.to_string().as_bytes())
        .unwrap()
        .model
    {
        ModelSpec::Bpe {
            vocab,
            merges,
            byte_fallback,
            ..
        } => {
            assert_eq!(vocab.len(), 3);
            assert_eq!(merges, [("a".into(), "b".into()), ("a".into(), "b".into())]);
            assert!(byte_fallback);
        }
        other => panic!("{other:?}"),
    }
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
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        text in "[a-zA-Z0-9 ,.\\[\\]#中é]{0,24}",
    ) {
        let mut bytes = small_json().into_bytes();
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
            exercise(&tok, &text);
        }
    }

    #[test]
    fn value_mutations_never_panic(
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<u16>(), prop::option::weighted(0.3, json_value())),
            1..4,
        ),
        text in "[a-zA-Z0-9 ,.\\[\\]#中é]{0,24}",
    ) {
        let mut spec: Value = serde_json::from_str(&small_json()).unwrap();
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
        if let Ok(tok) = HfTokenizer::from_json(spec.to_string().as_bytes()) {
            exercise(&tok, &text);
        }
    }
}
