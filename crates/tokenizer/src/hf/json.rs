//! Reading `tokenizer.json` into a [`TokenizerSpec`], with an error that names the path of
//! every bad value (`normalizer.normalizers[2].lowercase: expected a bool, got a string`).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::spec::{
    AddedTokenSpec, DecoderSpec, ModelSpec, NormalizerSpec, PostProcessorSpec, PreTokenizerSpec, SplitBehavior, SplitPattern, TemplatePiece,
    TemplateSpecialToken, TokenizerSpec,
};
use super::HfError;

/// Parse a `tokenizer.json`.
pub(crate) fn parse(bytes: &[u8]) -> Result<TokenizerSpec, HfError> {
    let root: Value = serde_json::from_slice(bytes).map_err(|err| HfError::Json(err.to_string()))?;
    let root = Obj::new(&root, "tokenizer.json".to_string())?;
    if let Some(version) = root.opt_str("version")? {
        if version != "1.0" {
            return Err(root.invalid("version", format!("unknown version {version:?}")));
        }
    }
    let added_tokens = match root.get("added_tokens") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => array(value, "added_tokens")?
            .iter()
            .enumerate()
            .map(|(i, item)| parse_added_token(item, format!("added_tokens[{i}]")))
            .collect::<Result<_, _>>()?,
    };
    let normalizer = root.opt_value("normalizer").map(|v| parse_normalizer(v, "normalizer".into())).transpose()?;
    let pre_tokenizer = root.opt_value("pre_tokenizer").map(|v| parse_pre_tokenizer(v, "pre_tokenizer".into())).transpose()?;
    let model = match root.opt_value("model") {
        Some(value) => parse_model(value, "model".into())?,
        None => return Err(HfError::Missing { path: "model".into() }),
    };
    let post_processor = root.opt_value("post_processor").map(|v| parse_post_processor(v, "post_processor".into())).transpose()?;
    let decoder = root.opt_value("decoder").map(|v| parse_decoder(v, "decoder".into())).transpose()?;
    let truncation_max_length = match root.opt_value("truncation") {
        Some(value) => Obj::new(value, "truncation".into())?.opt_usize("max_length")?,
        None => None,
    };
    Ok(TokenizerSpec { added_tokens, normalizer, pre_tokenizer, model, post_processor, decoder, truncation_max_length })
}

fn parse_added_token(value: &Value, path: String) -> Result<AddedTokenSpec, HfError> {
    let obj = Obj::new(value, path)?;
    let special = obj.bool_or("special", false)?;
    Ok(AddedTokenSpec {
        id: obj.req_u32("id")?,
        content: obj.req_str("content")?.to_string(),
        special,
        normalized: obj.bool_or("normalized", !special)?,
        lstrip: obj.bool_or("lstrip", false)?,
        rstrip: obj.bool_or("rstrip", false)?,
        single_word: obj.bool_or("single_word", false)?,
    })
}

fn parse_normalizer(value: &Value, path: String) -> Result<NormalizerSpec, HfError> {
    let obj = Obj::new(value, path)?;
    Ok(match obj.type_name()? {
        "NFC" => NormalizerSpec::Nfc,
        "NFD" => NormalizerSpec::Nfd,
        "NFKC" => NormalizerSpec::Nfkc,
        "NFKD" => NormalizerSpec::Nfkd,
        "Lowercase" => NormalizerSpec::Lowercase,
        "StripAccents" => NormalizerSpec::StripAccents,
        "BertNormalizer" => NormalizerSpec::Bert {
            clean_text: obj.bool_or("clean_text", true)?,
            handle_chinese_chars: obj.bool_or("handle_chinese_chars", true)?,
            strip_accents: obj.opt_bool("strip_accents")?,
            lowercase: obj.bool_or("lowercase", true)?,
        },
        "Prepend" => NormalizerSpec::Prepend(obj.req_str("prepend")?.to_string()),
        "Replace" => NormalizerSpec::Replace { pattern: obj.pattern("pattern")?, content: obj.req_str("content")?.to_string() },
        "Sequence" => NormalizerSpec::Sequence(obj.list("normalizers", parse_normalizer)?),
        other => return Err(obj.unsupported(other)),
    })
}

fn parse_pre_tokenizer(value: &Value, path: String) -> Result<PreTokenizerSpec, HfError> {
    let obj = Obj::new(value, path)?;
    Ok(match obj.type_name()? {
        "BertPreTokenizer" => PreTokenizerSpec::Bert,
        "Whitespace" => PreTokenizerSpec::Whitespace,
        "WhitespaceSplit" => PreTokenizerSpec::WhitespaceSplit,
        "Digits" => PreTokenizerSpec::Digits { individual_digits: obj.bool_or("individual_digits", false)? },
        "Punctuation" => PreTokenizerSpec::Punctuation { behavior: obj.behavior_or("behavior", SplitBehavior::Isolated)? },
        "Sequence" => PreTokenizerSpec::Sequence(obj.list("pretokenizers", parse_pre_tokenizer)?),
        "ByteLevel" => PreTokenizerSpec::ByteLevel {
            add_prefix_space: obj.bool_or("add_prefix_space", true)?,
            trim_offsets: obj.bool_or("trim_offsets", true)?,
            use_regex: obj.bool_or("use_regex", true)?,
        },
        "Split" => PreTokenizerSpec::Split {
            pattern: obj.pattern("pattern")?,
            behavior: obj.behavior_or("behavior", SplitBehavior::Removed)?,
            invert: obj.bool_or("invert", false)?,
        },
        "Metaspace" => PreTokenizerSpec::Metaspace {
            replacement: obj.char_or("replacement", '\u{2581}')?,
            prepend_scheme: obj.prepend_scheme()?,
            split: obj.bool_or("split", true)?,
        },
        other => return Err(obj.unsupported(other)),
    })
}

fn parse_model(value: &Value, path: String) -> Result<ModelSpec, HfError> {
    let obj = Obj::new(value, path)?;
    // Files written by old versions of `tokenizers` have no "type" in the model: Hugging Face
    // then recognises the model by its fields, and so do we.
    let kind = match obj.opt_str("type")? {
        Some(kind) => kind,
        None if obj.get("merges").is_some() => "BPE",
        None if obj.get("max_input_chars_per_word").is_some() => "WordPiece",
        None => return Err(obj.missing("type")),
    };
    match kind {
        "WordPiece" => Ok(ModelSpec::WordPiece {
            vocab: parse_vocab(obj.req_value("vocab")?, obj.child("vocab"))?,
            unk_token: obj.opt_str("unk_token")?.unwrap_or("[UNK]").to_string(),
            continuing_subword_prefix: obj.opt_str("continuing_subword_prefix")?.unwrap_or("##").to_string(),
            max_input_chars_per_word: obj.opt_usize("max_input_chars_per_word")?.unwrap_or(100),
        }),
        "BPE" => {
            let merges_path = obj.child("merges");
            let merges = match obj.opt_value("merges") {
                None => Vec::new(),
                Some(value) => array(value, &merges_path)?
                    .iter()
                    .enumerate()
                    .map(|(i, merge)| parse_merge(merge, format!("{merges_path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            };
            let dropout = match obj.opt_value("dropout") {
                None => None,
                Some(value) => Some(value.as_f64().ok_or_else(|| wrong_type(obj.child("dropout"), "a number", value))?),
            };
            Ok(ModelSpec::Bpe {
                vocab: parse_vocab(obj.req_value("vocab")?, obj.child("vocab"))?,
                merges,
                dropout,
                unk_token: obj.opt_str("unk_token")?.map(str::to_string),
                continuing_subword_prefix: obj.opt_str("continuing_subword_prefix")?.map(str::to_string),
                end_of_word_suffix: obj.opt_str("end_of_word_suffix")?.map(str::to_string),
                fuse_unk: obj.bool_or("fuse_unk", false)?,
                byte_fallback: obj.bool_or("byte_fallback", false)?,
                ignore_merges: obj.bool_or("ignore_merges", false)?,
            })
        }
        other => Err(obj.unsupported(other)),
    }
}

fn parse_vocab(value: &Value, path: String) -> Result<HashMap<String, u32>, HfError> {
    let map = value.as_object().ok_or_else(|| wrong_type(path.clone(), "an object of token -> id", value))?;
    let mut vocab = HashMap::with_capacity(map.len());
    for (token, id) in map {
        vocab.insert(token.clone(), as_u32(id, || format!("{path}[{token:?}]"))?);
    }
    Ok(vocab)
}

/// A merge is `"left right"` (older files) or `["left", "right"]` (newer ones).
fn parse_merge(value: &Value, path: String) -> Result<(String, String), HfError> {
    match value {
        Value::String(line) => match line.split_once(' ') {
            Some((left, right)) => Ok((left.to_string(), right.to_string())),
            None => Err(HfError::Invalid { path, message: format!("merge {line:?} is not \"left right\"") }),
        },
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(left), Value::String(right)] => Ok((left.clone(), right.clone())),
            _ => Err(HfError::Invalid { path, message: "a merge pair must be two strings".into() }),
        },
        other => Err(wrong_type(path, "a string or a pair of strings", other)),
    }
}

fn parse_post_processor(value: &Value, path: String) -> Result<PostProcessorSpec, HfError> {
    let obj = Obj::new(value, path)?;
    Ok(match obj.type_name()? {
        "TemplateProcessing" => {
            let special_path = obj.child("special_tokens");
            let mut special_tokens = HashMap::new();
            if let Some(value) = obj.opt_value("special_tokens") {
                let map = value.as_object().ok_or_else(|| wrong_type(special_path.clone(), "an object", value))?;
                for (name, token) in map {
                    let token = Obj::new(token, format!("{special_path}[{name:?}]"))?;
                    let ids = array(token.req_value("ids")?, &token.child("ids"))?
                        .iter()
                        .map(|id| as_u32(id, || token.child("ids")))
                        .collect::<Result<Vec<_>, _>>()?;
                    let tokens = array(token.req_value("tokens")?, &token.child("tokens"))?
                        .iter()
                        .map(|t| t.as_str().map(str::to_string).ok_or_else(|| wrong_type(token.child("tokens"), "a string", t)))
                        .collect::<Result<Vec<_>, _>>()?;
                    if ids.len() != tokens.len() {
                        return Err(token.invalid("ids", format!("{} ids but {} tokens", ids.len(), tokens.len())));
                    }
                    special_tokens.insert(name.clone(), TemplateSpecialToken { ids, tokens });
                }
            }
            PostProcessorSpec::Template {
                single: obj.list("single", parse_template_piece)?,
                pair: match obj.opt_value("pair") {
                    Some(_) => obj.list("pair", parse_template_piece)?,
                    None => Vec::new(),
                },
                special_tokens,
            }
        }
        "BertProcessing" => PostProcessorSpec::Bert { sep: obj.token_pair("sep")?, cls: obj.token_pair("cls")? },
        "RobertaProcessing" => PostProcessorSpec::Roberta {
            sep: obj.token_pair("sep")?,
            cls: obj.token_pair("cls")?,
            trim_offsets: obj.bool_or("trim_offsets", true)?,
            add_prefix_space: obj.bool_or("add_prefix_space", true)?,
        },
        "ByteLevel" => PostProcessorSpec::ByteLevel {
            add_prefix_space: obj.bool_or("add_prefix_space", true)?,
            trim_offsets: obj.bool_or("trim_offsets", true)?,
        },
        "Sequence" => PostProcessorSpec::Sequence(obj.list("processors", parse_post_processor)?),
        other => return Err(obj.unsupported(other)),
    })
}

fn parse_template_piece(value: &Value, path: String) -> Result<TemplatePiece, HfError> {
    let obj = Obj::new(value, path)?;
    if let Some(inner) = obj.opt_value("Sequence") {
        let inner = Obj::new(inner, obj.child("Sequence"))?;
        return Ok(TemplatePiece::Sequence { id: inner.req_str("id")?.to_string(), type_id: inner.opt_u32("type_id")?.unwrap_or(0) });
    }
    if let Some(inner) = obj.opt_value("SpecialToken") {
        let inner = Obj::new(inner, obj.child("SpecialToken"))?;
        return Ok(TemplatePiece::SpecialToken { id: inner.req_str("id")?.to_string(), type_id: inner.opt_u32("type_id")?.unwrap_or(0) });
    }
    Err(HfError::Invalid { path: obj.path, message: "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}".into() })
}

fn parse_decoder(value: &Value, path: String) -> Result<DecoderSpec, HfError> {
    let obj = Obj::new(value, path)?;
    Ok(match obj.type_name()? {
        "WordPiece" => DecoderSpec::WordPiece { prefix: obj.opt_str("prefix")?.unwrap_or("##").to_string(), cleanup: obj.bool_or("cleanup", true)? },
        "ByteLevel" => DecoderSpec::ByteLevel,
        "Metaspace" => DecoderSpec::Metaspace { replacement: obj.char_or("replacement", '\u{2581}')?, prepend_scheme: obj.prepend_scheme()? },
        "ByteFallback" => DecoderSpec::ByteFallback,
        "Fuse" => DecoderSpec::Fuse,
        "Strip" => DecoderSpec::Strip {
            content: obj.char_or("content", ' ')?,
            start: obj.opt_usize("start")?.unwrap_or(0),
            stop: obj.opt_usize("stop")?.unwrap_or(0),
        },
        "Replace" => DecoderSpec::Replace { pattern: obj.pattern("pattern")?, content: obj.req_str("content")?.to_string() },
        "Sequence" => DecoderSpec::Sequence(obj.list("decoders", parse_decoder)?),
        other => return Err(obj.unsupported(other)),
    })
}

// --------------------------------------------------------------------------------------------
// Reading JSON values with paths in the errors.

/// A JSON object and the path that leads to it.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: String) -> Result<Obj<'a>, HfError> {
        match value.as_object() {
            Some(map) => Ok(Obj { map, path }),
            None => Err(wrong_type(path, "an object", value)),
        }
    }

    fn child(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The value of `key`, with `null` read as absent (as serde's `Option` does).
    fn opt_value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn req_value(&self, key: &str) -> Result<&'a Value, HfError> {
        self.opt_value(key).ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> HfError {
        HfError::Missing { path: self.child(key) }
    }

    fn invalid(&self, key: &str, message: String) -> HfError {
        HfError::Invalid { path: self.child(key), message }
    }

    fn unsupported(&self, name: &str) -> HfError {
        HfError::Unsupported { part: self.path.clone(), name: name.to_string() }
    }

    fn type_name(&self) -> Result<&'a str, HfError> {
        self.req_str("type")
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, HfError> {
        match self.opt_value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(self.child(key), "a string", other)),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, HfError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, HfError> {
        match self.opt_value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(self.child(key), "a bool", other)),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, HfError> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, HfError> {
        self.opt_value(key).map(|v| as_u32(v, || self.child(key))).transpose()
    }

    fn req_u32(&self, key: &str) -> Result<u32, HfError> {
        self.opt_u32(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, HfError> {
        match self.opt_value(key) {
            None => Ok(None),
            Some(value) => match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(wrong_type(self.child(key), "a non-negative integer", value)),
            },
        }
    }

    fn char_or(&self, key: &str, default: char) -> Result<char, HfError> {
        match self.opt_str(key)? {
            None => Ok(default),
            Some(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Ok(c),
                    _ => Err(self.invalid(key, format!("{s:?} is not one character"))),
                }
            }
        }
    }

    fn behavior_or(&self, key: &str, default: SplitBehavior) -> Result<SplitBehavior, HfError> {
        Ok(match self.opt_str(key)? {
            None => default,
            Some("Removed") => SplitBehavior::Removed,
            Some("Isolated") => SplitBehavior::Isolated,
            Some("MergedWithPrevious") => SplitBehavior::MergedWithPrevious,
            Some("MergedWithNext") => SplitBehavior::MergedWithNext,
            Some("Contiguous") => SplitBehavior::Contiguous,
            Some(other) => return Err(self.invalid(key, format!("unknown behavior {other:?}"))),
        })
    }

    /// Metaspace's `prepend_scheme`, "always" by default. Files written before it existed have
    /// `add_prefix_space` instead: Hugging Face ignores `true`, and takes `false` only with an
    /// explicit "never" (anything else is its error "add_prefix_space does not match declared
    /// prepend_scheme").
    fn prepend_scheme(&self) -> Result<String, HfError> {
        let scheme = self.opt_str("prepend_scheme")?;
        if self.opt_bool("add_prefix_space")? == Some(false) && scheme != Some("never") {
            return Err(self.invalid("add_prefix_space", format!("false does not match prepend_scheme {scheme:?}")));
        }
        Ok(scheme.unwrap_or("always").to_string())
    }

    /// `{"String": " "}` or `{"Regex": "\\s+"}`.
    fn pattern(&self, key: &str) -> Result<SplitPattern, HfError> {
        let pattern = Obj::new(self.req_value(key)?, self.child(key))?;
        match (pattern.opt_str("String")?, pattern.opt_str("Regex")?) {
            (Some(s), None) => Ok(SplitPattern::String(s.to_string())),
            (None, Some(r)) => Ok(SplitPattern::Regex(r.to_string())),
            _ => Err(HfError::Invalid { path: pattern.path, message: "expected {\"String\": ...} or {\"Regex\": ...}".into() }),
        }
    }

    /// `["[SEP]", 102]`: a token and its id.
    fn token_pair(&self, key: &str) -> Result<(String, u32), HfError> {
        let value = self.req_value(key)?;
        match value.as_array().map(Vec::as_slice) {
            Some([Value::String(token), id]) => Ok((token.clone(), as_u32(id, || self.child(key))?)),
            _ => Err(wrong_type(self.child(key), "a [token, id] pair", value)),
        }
    }

    fn list<T>(&self, key: &str, parse: impl Fn(&Value, String) -> Result<T, HfError>) -> Result<Vec<T>, HfError> {
        let path = self.child(key);
        array(self.req_value(key)?, &path)?.iter().enumerate().map(|(i, item)| parse(item, format!("{path}[{i}]"))).collect()
    }
}

fn array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>, HfError> {
    value.as_array().ok_or_else(|| wrong_type(path.to_string(), "an array", value))
}

fn as_u32(value: &Value, path: impl FnOnce() -> String) -> Result<u32, HfError> {
    value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| wrong_type(path(), "an id (0..2^32)", value))
}

fn wrong_type(path: String, expected: &'static str, got: &Value) -> HfError {
    HfError::WrongType {
        path,
        expected,
        got: match got {
            Value::Null => "null",
            Value::Bool(_) => "a bool",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        },
    }
}
