//! Byte-level BPE tokenizers trained by Hugging Face `tokenizers` with the GPT-2, Llama-3 and
//! Qwen2 pre-tokenizer settings (tests/fixtures/trained_bpe/, made by
//! tools/make_trained_bpe_fixtures.py): cutting held-out text with `scan::Pattern` and merging
//! each piece must give Hugging Face's ids.
//!
//! Each is checked twice: the scanner with a plain reference BPE written here (lowest rank
//! first, leftmost on ties: Hugging Face's order), and the crate's own `Tokenizer` end to end
//! with the pre-tokenizer named as GGUF names it ("gpt2", "llama-bpe", "qwen2").
//!
//! Set FERROLM_HELDOUT_IDS to a held-out file made with `--max-text-bytes 0` to run on the whole
//! corpus instead of the committed cut-down one.

use std::collections::HashMap;

use serde_json::Value;
use tokenizer::byte_level;
use tokenizer::scan::Pattern;
use tokenizer::{BpeConfig, TokenType, Tokenizer};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/trained_bpe");

/// A BPE model read from a tokenizer.json: vocabulary, merges and the pre-tokenizer pattern.
struct Trained {
    pattern: Pattern,
    /// Token spelling (byte-level alphabet) -> id.
    vocab: HashMap<String, u32>,
    /// Spelling of each id.
    tokens: Vec<String>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (usize, u32)>,
    /// The merges as "left right" lines, for `BpeConfig`.
    merge_lines: Vec<String>,
    /// Id of the token spelling each byte.
    byte_ids: [u32; 256],
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The scanner for the tokenizer.json's pre-tokenizer, which must be one of the two shapes the
/// fixture script writes: `ByteLevel` with `use_regex`, or `Split` (isolated, not inverted)
/// followed by `ByteLevel` without it.
fn pattern_of(pre_tokenizer: &Value) -> Pattern {
    match pre_tokenizer["type"].as_str() {
        Some("ByteLevel") => {
            assert_eq!(pre_tokenizer["use_regex"], Value::Bool(true));
            assert_eq!(pre_tokenizer["add_prefix_space"], Value::Bool(false));
            Pattern::Gpt2
        }
        Some("Sequence") => {
            let [split, byte_level] = pre_tokenizer["pretokenizers"].as_array().expect("a list").as_slice() else {
                panic!("expected Split then ByteLevel: {pre_tokenizer}");
            };
            assert_eq!(split["type"], "Split");
            assert_eq!(split["behavior"], "Isolated");
            assert_eq!(split["invert"], Value::Bool(false));
            assert_eq!(byte_level["type"], "ByteLevel");
            assert_eq!(byte_level["use_regex"], Value::Bool(false));
            let regex = split["pattern"]["Regex"].as_str().expect("a Regex pattern");
            Pattern::from_regex(regex).unwrap_or_else(|| panic!("no scanner recognises {regex:?}"))
        }
        _ => panic!("unexpected pre-tokenizer {pre_tokenizer}"),
    }
}

fn load(name: &str) -> Trained {
    let json: Value = serde_json::from_str(&read(&format!("{FIXTURES}/{name}.json"))).expect("valid tokenizer.json");
    let model = &json["model"];
    assert_eq!(model["type"], "BPE");
    assert_eq!(model["ignore_merges"], Value::Bool(false));
    assert!(json["added_tokens"].as_array().is_some_and(Vec::is_empty));
    assert!(json["normalizer"].is_null());

    let vocab: HashMap<String, u32> =
        model["vocab"].as_object().expect("vocab is an object").iter().map(|(token, id)| (token.clone(), id.as_u64().expect("id") as u32)).collect();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, &id) in &vocab {
        tokens[id as usize] = token.clone();
    }

    let mut merges = HashMap::new();
    let mut merge_lines = Vec::new();
    for (rank, merge) in model["merges"].as_array().expect("merges").iter().enumerate() {
        // tokenizers >= 0.20 writes [left, right]; older files "left right".
        let (left, right) = match merge {
            Value::Array(pair) => (pair[0].as_str().expect("left").to_string(), pair[1].as_str().expect("right").to_string()),
            Value::String(line) => {
                let (left, right) = line.split_once(' ').expect("left right");
                (left.to_string(), right.to_string())
            }
            _ => panic!("unexpected merge {merge}"),
        };
        let id = |token: &str| *vocab.get(token).unwrap_or_else(|| panic!("{token:?} not in vocab"));
        let merged = id(&format!("{left}{right}"));
        merges.entry((id(&left), id(&right))).or_insert((rank, merged));
        merge_lines.push(format!("{left} {right}"));
    }

    let mut byte_ids = [0u32; 256];
    for (byte, slot) in byte_ids.iter_mut().enumerate() {
        let spelling = byte_level::byte_to_char(byte as u8).to_string();
        *slot = *vocab.get(&spelling).unwrap_or_else(|| panic!("byte {byte} has no token"));
    }
    Trained { pattern: pattern_of(&json["pre_tokenizer"]), vocab, tokens, merges, merge_lines, byte_ids }
}

impl Trained {
    /// The plain BPE loop on one piece: merge the lowest-ranked adjacent pair, the leftmost on
    /// ties, until no pair has a rule.
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut symbols: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        loop {
            let mut best: Option<(usize, usize, u32)> = None;
            for at in 0..symbols.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(symbols[at], symbols[at + 1])) {
                    if best.is_none_or(|(best_rank, _, _)| rank < best_rank) {
                        best = Some((rank, at, merged));
                    }
                }
            }
            let Some((_, at, merged)) = best else { break };
            symbols[at] = merged;
            symbols.remove(at + 1);
        }
        out.extend(symbols);
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for range in self.pattern.pieces(text) {
            self.merge_piece(&text.as_bytes()[range], &mut ids);
        }
        ids
    }

    fn decode(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter().flat_map(|&id| byte_level::decode_spelling(&self.tokens[id as usize]).expect("byte-level token")).collect()
    }

    /// The crate's own tokenizer over this vocabulary with the pre-tokenizer GGUF calls `pre`.
    fn crate_tokenizer(&self, pre: &str) -> Tokenizer {
        Tokenizer::from_bpe(BpeConfig {
            tokens: self.tokens.clone(),
            token_types: vec![TokenType::Normal; self.tokens.len()],
            merges: self.merge_lines.clone(),
            pre_tokenizer: pre.to_string(),
            ..BpeConfig::default()
        })
        .expect("a valid vocabulary")
    }
}

struct HeldOut {
    text: String,
    ids: HashMap<String, Vec<u32>>,
}

fn held_out() -> Vec<HeldOut> {
    let path = std::env::var("FERROLM_HELDOUT_IDS").unwrap_or_else(|_| format!("{FIXTURES}/heldout_ids.jsonl"));
    read(&path)
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("valid JSON line");
            let ids = ["gpt2", "llama3", "qwen2"]
                .into_iter()
                .map(|kind| {
                    let ids =
                        record[kind].as_array().unwrap_or_else(|| panic!("no {kind} ids")).iter().map(|id| id.as_u64().expect("id") as u32).collect();
                    (kind.to_string(), ids)
                })
                .collect();
            HeldOut { text: record["text"].as_str().expect("text").to_string(), ids }
        })
        .collect()
}

/// Where two id lists first differ, for the failure message.
fn first_difference(ours: &[u32], theirs: &[u32]) -> usize {
    ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap_or(ours.len().min(theirs.len()))
}

fn check(kind: &str, expected_pattern: Pattern) {
    let trained = load(kind);
    assert_eq!(trained.pattern, expected_pattern);
    let records = held_out();
    assert!(records.len() > 250, "only {} held-out texts", records.len());
    let mut tokens = 0;
    for (index, record) in records.iter().enumerate() {
        let theirs = &record.ids[kind];
        let ours = trained.encode(&record.text);
        if &ours != theirs {
            let at = first_difference(&ours, theirs);
            let spell = |ids: &[u32]| -> Vec<String> {
                let window = &ids[at.min(ids.len())..(at + 6).min(ids.len())];
                window.iter().map(|&id| trained.tokens[id as usize].clone()).collect()
            };
            panic!(
                "{kind}: text #{index} {:?}: ids differ at {at}: ours {:?}, Hugging Face {:?}",
                record.text.chars().take(80).collect::<String>(),
                spell(&ours),
                spell(theirs)
            );
        }
        assert_eq!(trained.decode(&ours), record.text.as_bytes(), "{kind} #{index}");
        tokens += ours.len();
    }
    assert!(tokens > 50_000, "only {tokens} tokens compared");
}

#[test]
fn gpt2_settings_give_hugging_face_ids() {
    check("gpt2", Pattern::Gpt2);
}

#[test]
fn llama3_settings_give_hugging_face_ids() {
    check("llama3", Pattern::Llama3);
}

#[test]
fn qwen2_settings_give_hugging_face_ids() {
    check("qwen2", Pattern::Qwen2);
}

#[test]
fn crate_tokenizer_gives_hugging_face_ids_for_all_three_settings() {
    // The end-to-end path the crate ships (scanner, heap BPE, whole-piece cache) on
    // vocabularies it has never seen.
    for (kind, pre) in [("gpt2", "gpt2"), ("llama3", "llama-bpe"), ("qwen2", "qwen2")] {
        crate_tokenizer_case(kind, pre);
    }
}

fn crate_tokenizer_case(kind: &str, pre: &str) {
    let trained = load(kind);
    let tokenizer = trained.crate_tokenizer(pre);
    for (index, record) in held_out().iter().enumerate() {
        let ours = tokenizer.encode(&record.text, false);
        let theirs = &record.ids[kind];
        assert_eq!(
            &ours,
            theirs,
            "{kind}: text #{index} {:?}, first difference at {}",
            record.text.chars().take(80).collect::<String>(),
            first_difference(&ours, theirs)
        );
    }
    assert_eq!(trained.vocab.len(), tokenizer.vocab_size());
}
