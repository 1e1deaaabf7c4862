//! The `tokenizer.json` loader and WordPiece against Hugging Face `tokenizers` 0.23.3 on
//! all-MiniLM-L6-v2 and variants of it; fixtures made by `tools/make_hf_tokenizer_fixtures.py`
//! (see its docstring for the formats). Also: malformed files are errors, never panics.

use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::Value;
use tokenizer::hf::HfTokenizer;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn jsonl(name: &str) -> Vec<Value> {
    read(name).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn minilm_json() -> Value {
    serde_json::from_str(&read("minilm/tokenizer.json")).unwrap()
}

fn minilm() -> HfTokenizer {
    HfTokenizer::from_json(read("minilm/tokenizer.json").as_bytes()).unwrap()
}

/// MiniLM's tokenizer.json with top-level keys replaced ("model_patch" updates the model).
fn patched(patch: &Value) -> HfTokenizer {
    let mut spec = minilm_json();
    for (key, value) in patch.as_object().unwrap() {
        if key == "model_patch" {
            for (k, v) in value.as_object().unwrap() {
                spec["model"][k] = v.clone();
            }
        } else {
            spec[key] = value.clone();
        }
    }
    HfTokenizer::from_json(spec.to_string().as_bytes()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// Undo the delta coding of "spans": [start0, end0 - start0, start1 - end0, ...].
fn spans(value: &Value) -> Vec<(usize, usize)> {
    let mut flat = Vec::new();
    let mut previous = 0i64;
    for delta in value.as_array().unwrap() {
        previous += delta.as_i64().unwrap();
        flat.push(previous as usize);
    }
    flat.chunks(2).map(|pair| (pair[0], pair[1])).collect()
}

fn fnv1a(bytes: &[u8]) -> String {
    let mut hash = 0xcbf29ce484222325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}")
}

fn fnv_u32(values: impl IntoIterator<Item = u32>) -> String {
    let bytes: Vec<u8> = values.into_iter().flat_map(u32::to_le_bytes).collect();
    fnv1a(&bytes)
}

/// The decoded text is stored as is, or as a hash for long texts.
fn decoded_matches(line: &Value, key: &str, got: &str) -> bool {
    match line.get(key) {
        Some(expected) => expected.as_str() == Some(got),
        None => line[format!("{key}_fnv")].as_str() == Some(&fnv1a(got.as_bytes())),
    }
}

/// Compare one fixture line; returns what differs.
fn check_line(tok: &HfTokenizer, text: &str, line: &Value, cls_sep: Option<(u32, u32)>) -> Vec<String> {
    let mut problems = Vec::new();
    let plain = tok.encode_with_offsets(text, false);
    let special = tok.encode_with_offsets(text, true);
    let expected = ids(&line["ids"]);
    if plain.ids != expected {
        problems.push(format!("ids {:?}\n   expected {:?}", plain.ids, expected));
    }
    if plain.offsets != spans(&line["spans"]) {
        problems.push(format!("offsets {:?}\n   expected {:?}", plain.offsets, spans(&line["spans"])));
    }
    let (expected_special, expected_special_offsets) = match cls_sep {
        Some((cls, sep)) => {
            let mut ids = vec![cls];
            ids.extend(&expected);
            ids.push(sep);
            let mut offsets = vec![(0, 0)];
            offsets.extend(spans(&line["spans"]));
            offsets.push((0, 0));
            (ids, offsets)
        }
        None => (ids(&line["ids_special"]), spans(&line["spans_special"])),
    };
    if special.ids != expected_special {
        problems.push(format!("ids with special {:?}\n   expected {:?}", special.ids, expected_special));
    }
    if special.offsets != expected_special_offsets {
        problems.push(format!("offsets with special {:?}", special.offsets));
    }
    if tok.encode(text, true) != special.ids {
        problems.push("encode and encode_with_offsets disagree".into());
    }
    let decoded = tok.decode(&expected, true);
    if !decoded_matches(line, "decoded", &decoded) {
        problems.push(format!("decoded {decoded:?}"));
    }
    let decoded = tok.decode(&expected_special, false);
    if !decoded_matches(line, "decoded_special", &decoded) {
        problems.push(format!("decoded with special {decoded:?}"));
    }
    problems
}

fn golden_texts() -> Vec<String> {
    jsonl("minilm_golden.jsonl").iter().map(|line| line["text"].as_str().unwrap().to_string()).collect()
}

#[test]
fn minilm_matches_hugging_face_on_every_golden_document() {
    let tok = minilm();
    let lines = jsonl("minilm_golden.jsonl");
    let mut failures = Vec::new();
    let mut tokens = 0;
    for (i, line) in lines.iter().enumerate() {
        let text = line["text"].as_str().unwrap();
        tokens += line["ids"].as_array().unwrap().len();
        let problems = check_line(&tok, text, line, Some((101, 102)));
        if !problems.is_empty() {
            failures.push(format!("line {i} {:?}:\n  {}", truncate(text), problems.join("\n  ")));
        }
    }
    assert!(lines.len() > 300 && tokens > 90_000, "fixture too small");
    assert!(
        failures.is_empty(),
        "{} of {} documents differ:\n{}",
        failures.len(),
        lines.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

#[test]
fn minilm_matches_hugging_face_on_a_megabyte_of_joined_documents() {
    let tok = minilm();
    let texts = golden_texts();
    let mut total = 0;
    for (i, doc) in jsonl("minilm_large.jsonl").iter().enumerate() {
        let parts: Vec<&str> = doc["parts"].as_array().unwrap().iter().map(|p| texts[p.as_u64().unwrap() as usize].as_str()).collect();
        let text = parts.join(doc["sep"].as_str().unwrap());
        assert_eq!(text.len() as u64, doc["bytes"].as_u64().unwrap(), "document {i}");
        total += text.len();
        let plain = tok.encode_with_offsets(&text, false);
        assert_eq!(plain.ids.len() as u64, doc["n_ids"].as_u64().unwrap(), "document {i}: token count");
        assert_eq!(fnv_u32(plain.ids.iter().copied()), doc["ids_fnv"].as_str().unwrap(), "document {i}: ids");
        let offsets = plain.offsets.iter().flat_map(|&(s, e)| [s as u32, e as u32]);
        assert_eq!(fnv_u32(offsets), doc["offsets_fnv"].as_str().unwrap(), "document {i}: offsets");
        let decoded = tok.decode(&plain.ids, true);
        assert_eq!(fnv1a(decoded.as_bytes()), doc["decoded_fnv"].as_str().unwrap(), "document {i}: decode");
        let special = tok.encode(&text, true);
        assert_eq!(special.len(), plain.ids.len() + 2);
        assert_eq!((special[0], special[special.len() - 1]), (101, 102));
        assert_eq!(special[1..special.len() - 1], plain.ids[..]);
    }
    assert!(total >= 1_000_000, "only {total} bytes");
}

#[test]
fn variants_match_hugging_face() {
    let patches: HashMap<String, Value> = serde_json::from_str(&read("variants.json")).unwrap();
    let tokenizers: HashMap<&str, HfTokenizer> = patches.iter().map(|(name, patch)| (name.as_str(), patched(patch))).collect();
    let texts = golden_texts();
    let mut failures = Vec::new();
    let lines = jsonl("variants_golden.jsonl");
    for line in &lines {
        let variant = line["variant"].as_str().unwrap();
        let text = &texts[line["doc"].as_u64().unwrap() as usize];
        let problems = check_line(&tokenizers[variant], text, line, None);
        if !problems.is_empty() {
            failures.push(format!("{variant} on {:?}:\n  {}", truncate(text), problems.join("\n  ")));
        }
    }
    assert!(lines.len() > 500);
    assert!(
        failures.is_empty(),
        "{} of {} lines differ:\n{}",
        failures.len(),
        lines.len(),
        failures.iter().take(6).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn in_ranges(ranges: &Value) -> impl Fn(u32) -> bool {
    let ranges: Vec<(u32, u32)> = ranges.as_array().unwrap().iter().map(|r| (r[0].as_u64().unwrap() as u32, r[1].as_u64().unwrap() as u32)).collect();
    move |cp| {
        let i = ranges.partition_point(|&(_, end)| end < cp);
        ranges.get(i).is_some_and(|&(start, _)| start <= cp)
    }
}

fn hangul(cp: u32) -> Option<String> {
    let index = cp.checked_sub(0xAC00).filter(|&i| i < 11172)?;
    let mut out: String = [0x1100 + index / 588, 0x1161 + (index % 588) / 28].iter().map(|&c| char::from_u32(c).unwrap()).collect();
    if index % 28 != 0 {
        out.push(char::from_u32(0x11A7 + index % 28).unwrap());
    }
    Some(out)
}

/// Every code point through four normalizers and two pre-tokenizers, as Hugging Face classes
/// it: this is where Unicode-version traps show (BertNormalizer keeps U+0890, a format character
/// since Unicode 14, because Hugging Face's tables are Unicode 9).
#[test]
fn every_code_point_is_normalized_and_pre_tokenized_as_hugging_face_does() {
    let classes: Value = serde_json::from_str(&read("char_classes.json")).unwrap();
    let mut failures = Vec::new();
    for (name, kinds) in classes["normalized"].as_object().unwrap() {
        let spec = &classes["normalizer_specs"][name];
        let tok = patched(&serde_json::json!({ "normalizer": spec }));
        let removed = in_ranges(&kinds["removed"]);
        let space = in_ranges(&kinds["space"]);
        let spaced = in_ranges(&kinds["spaced"]);
        let is_hangul = in_ranges(&kinds["hangul"]);
        let other: HashMap<u32, &str> =
            kinds["other"].as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_str().unwrap())).collect();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let cp = c as u32;
            let expected = if removed(cp) {
                String::new()
            } else if space(cp) {
                " ".to_string()
            } else if spaced(cp) {
                format!(" {c} ")
            } else if is_hangul(cp) {
                hangul(cp).unwrap()
            } else if let Some(out) = other.get(&cp) {
                out.to_string()
            } else {
                c.to_string()
            };
            let got = tok.normalize(&c.to_string());
            if got != expected {
                failures.push(format!("{name} U+{cp:04X}: {got:?}, expected {expected:?}"));
            }
        }
    }
    for (name, spec) in [
        ("bert_pre_tokenizer", serde_json::json!({"type": "BertPreTokenizer"})),
        ("whitespace_pre_tokenizer", serde_json::json!({"type": "Whitespace"})),
    ] {
        let tok = patched(&serde_json::json!({ "pre_tokenizer": spec }));
        let kinds = &classes[name];
        type Class = Box<dyn Fn(u32) -> bool>;
        let removed: Class = Box::new(in_ranges(&kinds["removed"]));
        let split_off: Class = if name == "bert_pre_tokenizer" {
            Box::new(in_ranges(&kinds["isolated"]))
        } else {
            // For Whitespace, word characters stay inside "a?a"; the others are split off.
            let word = in_ranges(&kinds["word"]);
            let removed = in_ranges(&kinds["removed"]);
            Box::new(move |cp| !word(cp) && !removed(cp))
        };
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let text = format!("a{c}a");
            let got: Vec<&str> = tok.pre_tokenize(&text).into_iter().map(|r| &text[r]).collect();
            let c_str = c.to_string();
            let expected: Vec<&str> = if removed(c as u32) {
                vec!["a", "a"]
            } else if split_off(c as u32) {
                vec!["a", &c_str, "a"]
            } else {
                vec![&text]
            };
            if got != expected {
                failures.push(format!("{name} U+{:04X}: {got:?}, expected {expected:?}", c as u32));
            }
        }
    }
    assert!(failures.is_empty(), "{} code points differ:\n{}", failures.len(), failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n"));
}

// --------------------------------------------------------------------------------------------
// Named traps, on MiniLM.

#[test]
fn mask_written_in_text_is_one_token_even_without_add_special() {
    let tok = minilm();
    let encoding = tok.encode_with_offsets("a [MASK] b", false);
    assert_eq!(encoding.ids, [1037, 103, 1038]);
    assert_eq!(encoding.offsets, [(0, 1), (2, 8), (9, 10)]);
}

#[test]
fn lowercase_mask_is_plain_text_because_specials_match_before_normalization() {
    let tok = minilm();
    let ids = tok.encode("[mask]", false);
    assert_eq!(ids.len(), 3, "[ mask ]: {ids:?}");
    assert!(!ids.contains(&103));
}

#[test]
fn word_over_100_characters_is_one_unknown_covering_it() {
    let tok = minilm();
    let ok = tok.encode_with_offsets(&"a".repeat(100), false);
    assert!(!ok.ids.contains(&100));
    let long = tok.encode_with_offsets(&format!("x {}", "a".repeat(101)), false);
    assert_eq!(long.ids[1..], [100]);
    assert_eq!(long.offsets[1], (2, 103));
}

#[test]
fn accents_are_stripped_and_offsets_cover_the_accented_bytes() {
    let tok = minilm();
    let encoding = tok.encode_with_offsets("Café", false);
    assert_eq!(encoding.ids, tok.encode("cafe", false));
    assert_eq!(encoding.offsets.last().unwrap().1, "Café".len());
}

#[test]
fn control_characters_vanish_without_splitting_the_word() {
    let tok = minilm();
    assert_eq!(tok.encode("hel\u{0}lo\u{200B}", false), tok.encode("hello", false));
}

#[test]
fn cjk_ideographs_are_one_token_each_but_hangul_is_a_word() {
    let tok = minilm();
    assert_eq!(tok.encode("中文", false).len(), 2);
    let offsets = tok.encode_with_offsets("中文", false).offsets;
    assert_eq!(offsets, [(0, 3), (3, 6)]);
    assert_eq!(tok.normalize("한국"), "\u{1112}\u{1161}\u{11AB}\u{1100}\u{116E}\u{11A8}");
}

#[test]
fn truncation_and_padding_in_the_file_are_not_applied() {
    let tok = minilm();
    assert_eq!(tok.truncation_max_length(), Some(128));
    let text = "word ".repeat(300);
    assert_eq!(tok.encode(&text, true).len(), 302);
    assert_eq!(tok.encode("", true), [101, 102]);
}

#[test]
fn decode_skips_specials_on_request_and_unknown_ids_always() {
    let tok = minilm();
    let ids = tok.encode("Hello, world! it's", true);
    // BERT's spacing of the apostrophe is not undone: "it ' s", as Hugging Face gives.
    assert_eq!(tok.decode(&ids, true), "hello, world! it ' s");
    assert_eq!(tok.decode(&ids, false), "[CLS] hello, world! it ' s [SEP]");
    assert_eq!(tok.decode(&[7592, u32::MAX, 2088], true), "hello world");
}

// --------------------------------------------------------------------------------------------
// Robustness on the real file (the small-file mutation tests live in src/hf/tests.rs).

#[test]
fn every_truncation_of_the_file_is_an_error() {
    let bytes = read("minilm/tokenizer.json").into_bytes();
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).unwrap() + 1;
    let mut cut = 0;
    while cut < end {
        assert!(HfTokenizer::from_json(&bytes[..cut]).is_err(), "cut at {cut}");
        // Dense near the start and the end (the parts around the vocabulary), sparse inside;
        // a cut near the end costs a parse of nearly the whole file.
        cut += if cut < 2_000 {
            7
        } else if cut > end - 2_000 {
            29
        } else {
            1_999
        };
    }
    assert!(HfTokenizer::from_json(&bytes[..end]).is_ok());
}

/// A successfully loaded tokenizer must encode and decode anything without panicking, with
/// offsets inside the text on character boundaries.
fn exercise(tok: &HfTokenizer, text: &str) {
    for add_special in [false, true] {
        let encoding = tok.encode_with_offsets(text, add_special);
        assert_eq!(encoding.ids.len(), encoding.offsets.len());
        for &(start, end) in &encoding.offsets {
            assert!(start <= end && end <= text.len(), "{start}..{end} in {text:?}");
            assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
        }
        let _ = tok.decode(&encoding.ids, add_special);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn minilm_offsets_are_in_bounds_for_any_text(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
        let tok = shared_minilm();
        exercise(tok, &text);
        let plain = tok.encode(&text, false);
        let special = tok.encode(&text, true);
        prop_assert_eq!(&special[1..special.len() - 1], &plain[..]);
    }
}

fn shared_minilm() -> &'static HfTokenizer {
    static MINILM: std::sync::OnceLock<HfTokenizer> = std::sync::OnceLock::new();
    MINILM.get_or_init(minilm)
}
