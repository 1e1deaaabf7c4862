//! Building a tokenizer from GGUF metadata (`tokenizer.ggml.*`).
//!
//! Only byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`) are read here. Defaults
//! follow llama.cpp where the file is silent: no `token_type` array means every token is
//! normal, no `pre` means llama.cpp's "default" pre-tokenizer, and
//! `add_bos_token`/`add_eos_token` default to false (BOS to true for the Llama 3 family).

pub mod vectors;

use gguf::{GgufError, GgufFile, Value};
use tokenizer::spm::SpmConfig;
use tokenizer::{BpeConfig, TokenType, Tokenizer, TokenizerError, WpmConfig};

const MODEL_KEY: &str = "tokenizer.ggml.model";
const PRE_KEY: &str = "tokenizer.ggml.pre";
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE_KEY: &str = "tokenizer.ggml.token_type";
const MERGES_KEY: &str = "tokenizer.ggml.merges";
const BOS_KEY: &str = "tokenizer.ggml.bos_token_id";
const EOS_KEY: &str = "tokenizer.ggml.eos_token_id";
const UNK_KEY: &str = "tokenizer.ggml.unknown_token_id";
const PAD_KEY: &str = "tokenizer.ggml.padding_token_id";
const ADD_BOS_KEY: &str = "tokenizer.ggml.add_bos_token";
const ADD_EOS_KEY: &str = "tokenizer.ggml.add_eos_token";
const SCORES_KEY: &str = "tokenizer.ggml.scores";
const ADD_SPACE_PREFIX_KEY: &str = "tokenizer.ggml.add_space_prefix";
const SEP_KEY: &str = "tokenizer.ggml.seperator_token_id";
const LOWERCASE_KEY: &str = "tokenizer.ggml.normalizer.lowercase";
const STRIP_ACCENTS_KEY: &str = "tokenizer.ggml.normalizer.strip_accents";

/// Why a GGUF file's tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerGgufError {
    /// A key is missing or has the wrong type. (Transparent: a message that repeated its
    /// source would print the cause twice in an error chain.)
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A tokenizer model this crate does not read from GGUF.
    #[error(
        "{MODEL_KEY} is {model:?}: GGUF tokenizers of type \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece), \"bert\" (WordPiece) and \"gemma4\" are supported; for another, pass its Hugging Face tokenizer.json with --tokenizer"
    )]
    UnsupportedModel { model: String },
    /// An array element has the wrong type.
    #[error("{key}[{index}] should be {expected}, found {found}")]
    BadElement { key: &'static str, index: usize, expected: &'static str, found: String },
    /// A token type code outside 1..=6.
    #[error("{TOKEN_TYPE_KEY}[{index}] is {code}, not a known token type (1..=6)")]
    UnknownTokenType { index: usize, code: i64 },
    /// The vocabulary itself is inconsistent, or its pre-tokenizer unknown.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Whose tokenization to reproduce where llama.cpp and Hugging Face `tokenizers` differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    /// llama.cpp's (GGUF files are its format): a byte without a token is a barrier to merges;
    /// SentencePiece whitespace-run tokens are cut out whole.
    #[default]
    LlamaCpp,
    /// Hugging Face's: such a byte is dropped before merging; whitespace runs merge as "▁"s
    /// (see [`SpmConfig::with_hugging_face_whitespace`]).
    HuggingFace,
}

/// Build the tokenizer described by `file`'s `tokenizer.ggml.*` metadata, as llama.cpp reads it.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerGgufError> {
    tokenizer_from_gguf_compat(file, Compat::LlamaCpp)
}

/// [`tokenizer_from_gguf`], reproducing `compat`'s tokenization where the peers differ.
pub fn tokenizer_from_gguf_compat(file: &GgufFile, compat: Compat) -> Result<Tokenizer, TokenizerGgufError> {
    let model = file.get_str(MODEL_KEY)?;
    if model == "llama" {
        return spm_from_gguf(file, compat);
    }
    if model == "bert" {
        return wpm_from_gguf(file);
    }
    if model != "gpt2" && model != "gemma4" {
        return Err(TokenizerGgufError::UnsupportedModel { model: model.to_string() });
    }
    let pre_tokenizer = match file.get(PRE_KEY) {
        Some(_) => file.get_str(PRE_KEY)?.to_string(),
        None => "default".to_string(),
    };
    let tokens = strings(file, TOKENS_KEY)?;
    let token_types = match file.get(TOKEN_TYPE_KEY) {
        Some(_) => token_types(file.get_array(TOKEN_TYPE_KEY)?)?,
        None => vec![TokenType::Normal; tokens.len()],
    };
    let merges = strings(file, MERGES_KEY)?;
    let config = BpeConfig {
        tokens,
        token_types,
        merges,
        pre_tokenizer: pre_tokenizer.clone(),
        bos_id: optional_u32(file, BOS_KEY)?,
        eos_id: optional_u32(file, EOS_KEY)?,
        unk_id: optional_u32(file, UNK_KEY)?,
        pad_id: optional_u32(file, PAD_KEY)?,
        add_bos: optional_bool(file, ADD_BOS_KEY)?.unwrap_or_else(|| tokenizer::PreTokenizer::adds_bos_by_default(&pre_tokenizer)),
        add_eos: optional_bool(file, ADD_EOS_KEY)?.unwrap_or(false),
    };
    if model == "gemma4" {
        // llama.cpp always adds BOS for Gemma 4, whatever the file says.
        return Ok(Tokenizer::from_char_bpe(BpeConfig { add_bos: true, ..config })?);
    }
    let tok = Tokenizer::from_bpe(config)?;
    Ok(match compat {
        Compat::LlamaCpp => tok,
        Compat::HuggingFace => tok.with_missing_bytes(tokenizer::MissingBytes::Drop),
    })
}

/// A SentencePiece-style vocabulary (`tokenizer.ggml.model = "llama"`): tokens, scores and
/// types, with llama.cpp's defaults for absent keys (BOS added, EOS not, a space prefix).
fn spm_from_gguf(file: &GgufFile, compat: Compat) -> Result<Tokenizer, TokenizerGgufError> {
    let tokens = strings(file, TOKENS_KEY)?;
    let token_types = match file.get(TOKEN_TYPE_KEY) {
        Some(_) => token_types(file.get_array(TOKEN_TYPE_KEY)?)?,
        None => vec![TokenType::Normal; tokens.len()],
    };
    let scores = file
        .get_array(SCORES_KEY)?
        .iter()
        .enumerate()
        .map(|(index, value)| value.as_f32().ok_or_else(|| bad_element(SCORES_KEY, index, "a number", value)))
        .collect::<Result<Vec<f32>, _>>()?;
    let config = SpmConfig {
        tokens,
        scores,
        token_types,
        bos_id: optional_u32(file, BOS_KEY)?,
        eos_id: optional_u32(file, EOS_KEY)?,
        unk_id: optional_u32(file, UNK_KEY)?,
        pad_id: optional_u32(file, PAD_KEY)?,
        add_bos: optional_bool(file, ADD_BOS_KEY)?.unwrap_or(true),
        add_eos: optional_bool(file, ADD_EOS_KEY)?.unwrap_or(false),
        add_space_prefix: optional_bool(file, ADD_SPACE_PREFIX_KEY)?.unwrap_or(true),
    };
    let config = match compat {
        Compat::LlamaCpp => config,
        Compat::HuggingFace => config.with_hugging_face_whitespace(),
    };
    Ok(Tokenizer::from_spm(config)?)
}

/// A WordPiece vocabulary (`tokenizer.ggml.model = "bert"`), with llama.cpp's defaults: lower
/// case and accents stripped unless the file says otherwise (accents follow lower case); BOS
/// (`[CLS]`) 101, unknown 100, separator 102 and padding 0 where the file names none (and the
/// vocabulary has them); BOS first and the separator last whenever special tokens are added.
fn wpm_from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerGgufError> {
    let tokens = strings(file, TOKENS_KEY)?;
    let token_types = match file.get(TOKEN_TYPE_KEY) {
        Some(_) => token_types(file.get_array(TOKEN_TYPE_KEY)?)?,
        None => vec![TokenType::Normal; tokens.len()],
    };
    let lowercase = optional_bool(file, LOWERCASE_KEY)?.unwrap_or(true);
    let in_vocab = |id: u32| ((id as usize) < tokens.len()).then_some(id);
    let config = WpmConfig {
        unk_id: optional_u32(file, UNK_KEY)?.or(in_vocab(100)),
        bos_id: optional_u32(file, BOS_KEY)?.or(in_vocab(101)),
        eos_id: optional_u32(file, SEP_KEY)?.or(in_vocab(102)),
        pad_id: optional_u32(file, PAD_KEY)?.or(in_vocab(0)),
        tokens,
        token_types,
        add_bos: true,
        add_eos: true,
        lowercase,
        strip_accents: optional_bool(file, STRIP_ACCENTS_KEY)?.unwrap_or(lowercase),
    };
    Ok(Tokenizer::from_wpm(config)?)
}

fn strings(file: &GgufFile, key: &'static str) -> Result<Vec<String>, TokenizerGgufError> {
    file.get_array(key)?
        .iter()
        .enumerate()
        .map(|(index, value)| value.as_str().map(str::to_string).ok_or_else(|| bad_element(key, index, "a string", value)))
        .collect()
}

fn token_types(codes: &[Value]) -> Result<Vec<TokenType>, TokenizerGgufError> {
    codes
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let code = value.as_i64().ok_or_else(|| bad_element(TOKEN_TYPE_KEY, index, "an integer", value))?;
            i32::try_from(code).ok().and_then(TokenType::from_gguf).ok_or(TokenizerGgufError::UnknownTokenType { index, code })
        })
        .collect()
}

fn bad_element(key: &'static str, index: usize, expected: &'static str, value: &Value) -> TokenizerGgufError {
    TokenizerGgufError::BadElement { key, index, expected, found: format!("{:?}", value.value_type()) }
}

fn optional_u32(file: &GgufFile, key: &str) -> Result<Option<u32>, GgufError> {
    file.get(key).map(|_| file.get_u32(key)).transpose()
}

fn optional_bool(file: &GgufFile, key: &str) -> Result<Option<bool>, GgufError> {
    file.get(key).map(|_| file.get_bool(key)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf::{GgufWriter, ValueType};

    fn string_array(items: &[&str]) -> Value {
        Value::Array(ValueType::String, items.iter().map(|s| Value::from(*s)).collect())
    }

    /// A tiny gpt2 vocabulary: one control token, "a", "b", "ab" and the merge "a b".
    fn writer(model: &str) -> GgufWriter {
        let mut writer = GgufWriter::new();
        writer
            .add_kv(MODEL_KEY, Value::from(model))
            .add_kv(PRE_KEY, Value::from("smollm"))
            .add_kv(TOKENS_KEY, string_array(&["<|endoftext|>", "a", "b", "ab"]))
            .add_kv(MERGES_KEY, string_array(&["a b"]))
            .add_kv(EOS_KEY, Value::from(0u32));
        writer
    }

    fn build(writer: &GgufWriter) -> Result<Tokenizer, TokenizerGgufError> {
        let file = GgufFile::from_bytes(writer.to_bytes().expect("writable")).expect("parsable");
        tokenizer_from_gguf(&file)
    }

    #[test]
    fn absent_optional_keys_take_llama_cpp_defaults() {
        let tok = build(&writer("gpt2")).expect("valid tokenizer");
        assert_eq!(tok.encode("ab", false), vec![3]);
        assert_eq!(tok.token_type(0), Some(TokenType::Normal));
        assert!(!tok.add_bos());
        assert_eq!(tok.bos_id(), None);
        assert_eq!(tok.eos_id(), Some(0));
    }

    #[test]
    fn token_types_and_flags_are_read() {
        let mut writer = writer("gpt2");
        writer
            .add_kv(TOKEN_TYPE_KEY, Value::Array(ValueType::I32, [3i32, 1, 1, 1].map(Value::from).to_vec()))
            .add_kv(ADD_BOS_KEY, Value::from(true))
            .add_kv(BOS_KEY, Value::from(0u32));
        let tok = build(&writer).expect("valid tokenizer");
        assert_eq!(tok.token_type(0), Some(TokenType::Control));
        assert_eq!(tok.encode_with_special("<|endoftext|>ab", true), vec![0, 0, 3]);
    }

    #[test]
    fn unknown_model_is_named_in_the_error() {
        let error = build(&writer("rwkv")).expect_err("RWKV is not read from GGUF");
        assert!(matches!(&error, TokenizerGgufError::UnsupportedModel { model } if model == "rwkv"));
        assert!(error.to_string().contains("\"rwkv\""));
    }

    #[test]
    fn sentencepiece_vocabulary_from_gguf_merges_by_score() {
        // "▁a", "b" merge to "▁ab" (score 1.0) before "▁a" + "bc" would; byte fallback for "z".
        let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "c", "▁a", "bc", "▁ab", "<0x7A>"];
        let scores: Vec<Value> = [0.0f32, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, 2.0, 0.5, 1.0, 0.0].iter().map(|&s| Value::F32(s)).collect();
        let types: Vec<Value> = [2i32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6].iter().map(|&t| Value::I32(t)).collect();
        let mut w = GgufWriter::new();
        w.add_kv(MODEL_KEY, Value::from("llama"))
            .add_kv(TOKENS_KEY, string_array(&tokens))
            .add_kv(SCORES_KEY, Value::Array(ValueType::F32, scores))
            .add_kv(TOKEN_TYPE_KEY, Value::Array(ValueType::I32, types))
            .add_kv(BOS_KEY, Value::from(1u32))
            .add_kv(EOS_KEY, Value::from(2u32))
            .add_kv(UNK_KEY, Value::from(0u32));
        let tok = build(&w).expect("valid SentencePiece vocabulary");
        assert_eq!(tok.model_name(), "llama");
        // Default add_space_prefix: " abz" -> "▁abz"; add_bos defaults to true.
        assert_eq!(tok.encode_with_special("abz", false), vec![1, 9, 10]);
        assert_eq!(tok.decode(&[9, 10], false), " abz");
        // Offsets: the space SentencePiece adds in front is not in the text.
        assert_eq!(tok.encode_with_offsets("abz", false), (vec![9, 10], vec![(0, 2), (2, 3)]));
        // Scores must line up with tokens.
        let mut short = GgufWriter::new();
        short
            .add_kv(MODEL_KEY, Value::from("llama"))
            .add_kv(TOKENS_KEY, string_array(&tokens))
            .add_kv(SCORES_KEY, Value::Array(ValueType::F32, vec![Value::F32(0.0)]));
        assert!(build(&short).is_err());
    }

    #[test]
    fn unknown_token_type_code_is_reported_with_its_index() {
        let mut writer = writer("gpt2");
        writer.add_kv(TOKEN_TYPE_KEY, Value::Array(ValueType::I32, [1i32, 1, 9, 1].map(Value::from).to_vec()));
        let error = build(&writer).expect_err("code 9 is not a token type");
        assert!(matches!(error, TokenizerGgufError::UnknownTokenType { index: 2, code: 9 }));
    }

    #[test]
    fn missing_pre_tokenizer_is_llama_cpp_default() {
        let mut writer = GgufWriter::new();
        writer.add_kv(MODEL_KEY, Value::from("gpt2")).add_kv(TOKENS_KEY, string_array(&["a", "b", "ab"])).add_kv(MERGES_KEY, string_array(&["a b"]));
        let tok = build(&writer).expect("llama.cpp's default pre-tokenizer");
        assert_eq!(tok.pre_tokenizer(), tokenizer::PreTokenizer::from_name("default"));
        // The default chain cuts punctuation runs apart from words.
        assert_eq!(tok.encode("ab", false), vec![2]);
    }

    #[test]
    fn unknown_pre_tokenizer_is_named_on_one_line() {
        let mut writer = GgufWriter::new();
        writer
            .add_kv(MODEL_KEY, Value::from("gpt2"))
            .add_kv(PRE_KEY, Value::from("viking"))
            .add_kv(TOKENS_KEY, string_array(&["a"]))
            .add_kv(MERGES_KEY, string_array(&[]));
        let error = build(&writer).expect_err("viking is not supported");
        let message = error.to_string();
        assert!(message.contains("\"viking\"") && !message.contains('\n'), "{message}");
    }
}
