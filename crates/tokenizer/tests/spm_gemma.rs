//! Token-exact check of the SentencePiece-style tokenizer on Gemma 3's vocabulary.
//!
//! Fixtures (tests/fixtures/spm, made by tools/make_spm_fixtures.py; see the README there):
//! `gemma3_vocab.tsv` is the GGUF's tokenizer (tokens, scores, types, special ids and flags) and
//! `gemma_golden.jsonl` holds, for 1.1 MB of varied text, the ids llama.cpp gives (reading `</s>`
//! as the user-defined token the file declares), plus "hf_ids" where Hugging Face `tokenizers`
//! differs and "llama_ids" where raw llama.cpp does.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use tokenizer::spm::{Scratch, SpmConfig, SpmTokenizer};
use tokenizer::TokenType;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/spm").join(name)
}

fn read(name: &str) -> String {
    let path = fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Undo the vocabulary file's escapes: `\\`, `\t`, `\n`, `\r`, `\u{XX}`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('u') => {
                let code: String = chars.by_ref().take_while(|&c| c != '}').skip(1).collect();
                let code = u32::from_str_radix(&code, 16).expect("hex escape");
                out.push(char::from_u32(code).expect("a character"));
            }
            other => panic!("bad escape \\{other:?} in {text:?}"),
        }
    }
    out
}

fn optional_id(header: &Value, key: &str) -> Option<u32> {
    header[key].as_u64().map(|id| id as u32)
}

fn load_config() -> SpmConfig {
    let text = read("gemma3_vocab.tsv");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("header")).expect("JSON header");
    assert_eq!(header["model"], "llama");
    let mut config = SpmConfig {
        bos_id: optional_id(&header, "bos_id"),
        eos_id: optional_id(&header, "eos_id"),
        unk_id: optional_id(&header, "unk_id"),
        pad_id: optional_id(&header, "pad_id"),
        add_bos: header["add_bos"].as_bool().expect("add_bos"),
        add_eos: header["add_eos"].as_bool().expect("add_eos"),
        add_space_prefix: header["add_space_prefix"].as_bool().expect("add_space_prefix"),
        ..SpmConfig::default()
    };
    let mut previous = 0.0f32;
    for (i, line) in lines.enumerate() {
        let mut fields = line.splitn(3, '\t');
        let (kind, score, token) = match (fields.next(), fields.next(), fields.next()) {
            (Some(k), Some(s), Some(t)) => (k, s, t),
            _ => panic!("vocabulary line {} is not type<TAB>score<TAB>text", i + 2),
        };
        let code: i32 = kind.parse().expect("type code");
        config.token_types.push(TokenType::from_gguf(code).expect("known type"));
        // An empty score is the previous one minus 1.
        let score = if score.is_empty() { previous - 1.0 } else { score.parse().expect("score") };
        config.scores.push(score);
        previous = score;
        config.tokens.push(unescape(token));
    }
    assert_eq!(config.tokens.len() as u64, header["count"].as_u64().expect("count"));
    config
}

fn gemma() -> &'static SpmTokenizer {
    static TOKENIZER: OnceLock<SpmTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let config = load_config();
        let start = Instant::now();
        let tok = SpmTokenizer::new(config).expect("Gemma's vocabulary builds");
        eprintln!("Gemma tokenizer built in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
        tok
    })
}

struct Doc {
    text: String,
    special: bool,
    ids: Vec<u32>,
    hf_ids: Option<Vec<u32>>,
    llama_ids: Option<Vec<u32>>,
}

fn ids(value: &Value) -> Option<Vec<u32>> {
    value.as_array().map(|ids| ids.iter().map(|id| id.as_u64().expect("an id") as u32).collect())
}

fn docs() -> &'static [Doc] {
    static DOCS: OnceLock<Vec<Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        read("gemma_golden.jsonl")
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("golden line {}: {e}", i + 1));
                Doc {
                    text: v["text"].as_str().expect("text").to_string(),
                    special: v["special"].as_bool().expect("special"),
                    ids: ids(&v["ids"]).expect("ids"),
                    hf_ids: ids(&v["hf_ids"]),
                    llama_ids: ids(&v["llama_ids"]),
                }
            })
            .collect()
    })
}

fn show(tok: &SpmTokenizer, ids: &[u32]) -> String {
    let pieces: Vec<String> = ids.iter().map(|&id| format!("{id}:{:?}", tok.id_to_token(id).unwrap_or("?"))).collect();
    pieces.join(" ")
}

#[test]
fn gemma_vocabulary_is_what_its_gguf_declares() {
    let tok = gemma();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.unk_id(), tok.pad_id()), (Some(2), Some(1), Some(3), Some(0)));
    assert!(tok.add_bos() && !tok.add_eos() && !tok.add_space_prefix());
    assert_eq!(tok.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.token_type(105), Some(TokenType::Control));
    assert_eq!(tok.token_type(138), Some(TokenType::UserDefined));
    assert_eq!(tok.id_to_token(138), Some("  "));
    assert_eq!(tok.token_bytes(238 + 0x41), Some(&b"A"[..]));
    // The first merge's score is -0.0: the sign survives the fixture.
    assert_eq!(tok.score(494).map(f32::to_bits), Some((-0.0f32).to_bits()));
}

#[test]
fn ids_equal_llama_cpp_on_the_gemma_corpus() {
    let tok = gemma();
    let docs = docs();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let (mut bytes, mut seconds) = (0usize, 0f64);
    let mut failures = Vec::new();
    let (mut same_as_hf, mut same_as_llama) = (0, 0);
    for (line, doc) in docs.iter().enumerate() {
        out.clear();
        let start = Instant::now();
        tok.encode_into(&doc.text, false, doc.special, &mut scratch, &mut out);
        seconds += start.elapsed().as_secs_f64();
        bytes += doc.text.len();
        same_as_hf += usize::from(doc.hf_ids.as_ref().is_none_or(|hf| *hf == out));
        same_as_llama += usize::from(doc.llama_ids.as_ref().is_none_or(|l| *l == out));
        if out != doc.ids {
            let at = out.iter().zip(&doc.ids).position(|(a, b)| a != b).unwrap_or(out.len().min(doc.ids.len()));
            failures.push(format!(
                "line {} (special={}) {:?}: first difference at token {at}\n  ours:      {}\n  llama.cpp: {}",
                line + 1,
                doc.special,
                doc.text.chars().take(60).collect::<String>(),
                show(tok, &out[at..out.len().min(at + 6)]),
                show(tok, &doc.ids[at..doc.ids.len().min(at + 6)]),
            ));
        }
    }
    eprintln!(
        "{} docs, {bytes} bytes: {} equal to the fixture, {same_as_hf} to Hugging Face, \
         {same_as_llama} to raw llama.cpp; {:.1} MB/s",
        docs.len(),
        docs.len() - failures.len(),
        bytes as f64 / seconds / 1e6
    );
    assert!(docs.len() > 1000 && bytes > 1_000_000, "the corpus shrank");
    assert!(failures.is_empty(), "{} of {} docs differ:\n{}", failures.len(), docs.len(), failures[..failures.len().min(8)].join("\n"));
}

#[test]
fn decode_of_encode_gives_the_text_back() {
    let tok = gemma();
    for doc in docs() {
        let ids = tok.encode(&doc.text, false, doc.special);
        // "▁" written in the text is a space to SentencePiece: it comes back as one.
        let expected = doc.text.replace('\u{2581}', " ");
        assert_eq!(tok.decode(&ids, true), expected, "special={}", doc.special);
    }
}

#[test]
fn bos_comes_first_when_special_tokens_are_added() {
    let tok = gemma();
    let ids = tok.encode("<start_of_turn>user\nHi", true, true);
    assert_eq!(ids[..2], [2, 105]);
    assert_eq!(tok.decode(&ids, false), "user\nHi");
    assert_eq!(tok.decode(&ids, true), "<bos><start_of_turn>user\nHi");
}

/// A deterministic text without spaces, newlines or '<': letters, digits, punctuation, CJK and
/// emoji, so that the whole text is one piece.
fn no_space_text(bytes: usize) -> String {
    let alphabet: Vec<char> =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?-_=+()[]{}/\\'\"éüñßжπ日本語中文한국😀🚀".chars().collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::with_capacity(bytes + 4);
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push(alphabet[(state % alphabet.len() as u64) as usize]);
    }
    text
}

/// Pathological inputs encode in time (and work) linear in their size. The timing bound is
/// generous on purpose (a shared machine): per byte, the largest input may cost up to 3x the
/// smallest; a quadratic merge would cost 10x. The operation counts are exact and tight.
#[test]
fn pathological_inputs_encode_in_linear_time() {
    let tok = gemma();
    type MakeText = fn(usize) -> String;
    let inputs: [(&str, MakeText); 2] = [("one letter repeated", |n| "a".repeat(n)), ("no spaces", no_space_text)];
    for (name, make) in inputs {
        let mut per_byte = Vec::new();
        for size in [100_000usize, 300_000, 1_000_000] {
            let text = make(size);
            let mut best = f64::INFINITY;
            let mut stats = None;
            for _ in 0..3 {
                let mut scratch = Scratch::default();
                let mut out = Vec::new();
                let start = Instant::now();
                tok.encode_into(&text, false, false, &mut scratch, &mut out);
                best = best.min(start.elapsed().as_secs_f64());
                stats = Some(scratch.stats());
                assert!(!out.is_empty());
            }
            let stats = stats.expect("ran");
            let chars = text.chars().count() as u64;
            assert!(stats.pushes <= 3 * chars && stats.pops <= stats.pushes, "{name} {size}: {stats:?}");
            eprintln!(
                "{name}: {size} bytes in {:.1} ms ({:.1} ns/byte; {} lookups, {} pushes)",
                best * 1e3,
                best * 1e9 / text.len() as f64,
                stats.lookups,
                stats.pushes
            );
            per_byte.push(best / text.len() as f64);
        }
        assert!(per_byte[2] <= 3.0 * per_byte[0], "{name}: time per byte grew from {:.1} to {:.1} ns", per_byte[0] * 1e9, per_byte[2] * 1e9);
    }
}

#[test]
fn hugging_face_whitespace_mode_gives_hugging_face_ids_on_the_gemma_corpus() {
    let tok = SpmTokenizer::new(load_config().with_hugging_face_whitespace()).expect("valid vocabulary");
    let mut failures = 0;
    for (line, doc) in docs().iter().enumerate() {
        let want = doc.hf_ids.as_ref().unwrap_or(&doc.ids);
        let got = tok.encode(&doc.text, false, doc.special);
        if &got != want {
            failures += 1;
            if failures <= 3 {
                eprintln!(
                    "line {}: {:?}\n ours {}\n hf   {}",
                    line + 1,
                    doc.text.chars().take(60).collect::<String>(),
                    show(&tok, &got),
                    show(&tok, want)
                );
            }
        }
    }
    assert_eq!(failures, 0, "{failures} of {} documents differ from Hugging Face", docs().len());
}
