//! `POST /v1/embeddings`: sentence vectors from a BERT encoder loaded beside the LLM
//! (`crates/embed`), in OpenAI's shape.
//!
//! The encoder is CPU work (tokenizing and the forward pass), so it runs on tokio's blocking
//! threads, never on the async workers that answer the other routes. One request encodes at a
//! time, on the encoder's own kernel threads: a batch of texts is already parallel inside the
//! forward pass, and a second request at once would only share the same cores. Requests wait
//! their turn, up to the server's queue length; more get 429.
//!
//! Each text gets the bits [`SentenceEmbedder::embed`] gives it (and so `ferrolm embed`): the same
//! tokenization, truncation, kernel level and flat batches, which never change a text's bits.

use crate::error::ApiError;
use embed::{SentenceEmbedder, TOKEN_BUDGET};
use kernels::{Level, ThreadPool};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The most texts in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// A sentence encoder served at `/v1/embeddings`.
pub struct EmbeddingModel {
    model: SentenceEmbedder,
    name: String,
    pool: ThreadPool,
    /// One permit: the request encoding now.
    running: Arc<Semaphore>,
    /// Requests waiting for the permit.
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl EmbeddingModel {
    /// Serves `model` under `name` (what `model` in requests and answers says), encoding on
    /// `pool`; at most `max_waiting` requests wait while one encodes (more get 429).
    pub fn new(model: SentenceEmbedder, name: String, pool: ThreadPool, max_waiting: usize) -> EmbeddingModel {
        EmbeddingModel { model, name, pool, running: Arc::new(Semaphore::new(1)), waiting: AtomicUsize::new(0), max_waiting: max_waiting.max(1) }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// D, the length of an embedding.
    pub fn dim(&self) -> usize {
        self.model.dim()
    }

    /// The embeddings (N, D) of `texts` and the tokens the encoder saw (special tokens included,
    /// after truncation), computed on a blocking thread once the request's turn comes.
    pub async fn embed(self: &Arc<Self>, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
        if self.waiting.fetch_add(1, Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(ApiError::queue_full(format!("{} embedding requests are already waiting: retry later", self.max_waiting)));
        }
        let permit = self.running.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Relaxed);
        let permit = permit.map_err(|_| ApiError::shutting_down())?;
        let me = self.clone();
        // The permit moves into the blocking task: a client that goes away drops this future,
        // but the encoding it started still holds the encoder until it ends.
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let sequences: Vec<Vec<u32>> = texts.iter().map(|t| me.model.tokenize(t)).collect();
            let tokens = sequences.iter().map(Vec::len).sum();
            me.model.embed_ids(&me.pool, Level::current(), &sequences, TOKEN_BUDGET).map(|v| (v, tokens))
        });
        match job.await {
            Ok(result) => result.map_err(|e| ApiError::internal(format!("the encoder failed: {e}"))),
            Err(e) => Err(ApiError::internal(format!("the encoder stopped: {e}"))),
        }
    }
}

/// A `/v1/embeddings` body. Unknown fields (`user`) are ignored, as OpenAI does.
#[derive(Deserialize, Debug)]
pub struct EmbeddingRequest {
    #[serde(default)]
    pub input: Value,
    pub model: Option<String>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<Value>,
}

/// How vectors are written in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingFormat {
    /// JSON numbers.
    Float,
    /// The little-endian f32 bytes, in base64 (OpenAI's `base64`).
    Base64,
}

/// A body checked against an encoder of dimension `dim`: the request, its texts and the format.
pub fn embedding_plan(bytes: &[u8], dim: usize) -> Result<(EmbeddingRequest, Vec<String>, EncodingFormat), ApiError> {
    let bad = |param: &str, message: String| ApiError::bad_request(message, Some(param));
    let r: EmbeddingRequest = crate::api::parse_json(bytes)?;
    let texts = match &r.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => return Err(bad("input", "input must hold at least one text".into())),
        Value::Array(items) if items.len() > MAX_INPUTS => {
            return Err(bad("input", format!("at most {MAX_INPUTS} texts in one request, got {}", items.len())))
        }
        Value::Array(items) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => texts.push(s.clone()),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(bad(
                            "input",
                            "token ids are not accepted as input: the encoder has its own vocabulary, send the texts as strings".into(),
                        ))
                    }
                    _ => return Err(bad("input", format!("input[{i}] must be a string"))),
                }
            }
            texts
        }
        Value::Null => return Err(bad("input", "input is required: a string or an array of strings".into())),
        _ => return Err(bad("input", "input must be a string or an array of strings".into())),
    };
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(bad("input", format!("input[{i}] is empty: every text must hold at least one character")));
    }
    let format = match r.encoding_format.as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => return Err(bad("encoding_format", format!("encoding_format must be \"float\" or \"base64\", got {other:?}"))),
    };
    match &r.dimensions {
        None | Some(Value::Null) => {}
        Some(d) if d.as_u64() == Some(dim as u64) => {}
        Some(d) => return Err(bad("dimensions", format!("this model's embeddings have {dim} dimensions and cannot be shortened: got {d}"))),
    }
    Ok((r, texts, format))
}

/// The answer: one `embedding` object per text, in input order.
pub fn embedding_response(model: &str, vectors: &[Vec<f32>], format: EncodingFormat, tokens: usize) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => Value::String(base64(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn plan_refuses_what_it_cannot_serve() {
        let param = |body: &str| embedding_plan(body.as_bytes(), 8).err().map(|e| (e.status.as_u16(), e.param));
        let input = Some("input".to_string());
        assert_eq!(param(r#"{"input": []}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"input": [1, 2, 3]}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"input": [[1, 2], [3]]}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"input": ["a", 7]}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"input": ["a", null]}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"input": [""]}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"input": {"text": "a"}}"#), Some((400, input.clone())));
        assert_eq!(param(r#"{"model": "x"}"#), Some((400, input)));
        assert_eq!(param(r#"{"input": "a", "encoding_format": "f16"}"#), Some((400, Some("encoding_format".into()))));
        assert_eq!(param(r#"{"input": "a", "dimensions": 4}"#), Some((400, Some("dimensions".into()))));
        assert_eq!(param(r#"{"input": "a", "dimensions": -8}"#), Some((400, Some("dimensions".into()))));
        let many = format!(r#"{{"input": {}}}"#, serde_json::to_string(&vec!["a"; MAX_INPUTS + 1]).unwrap());
        assert_eq!(param(&many), Some((400, Some("input".into()))));
        assert_eq!(param("{"), Some((400, None)));
        let (_, texts, format) = embedding_plan(br#"{"input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"}"#, 8).unwrap();
        assert_eq!((texts, format), (vec!["a".to_string(), "b".to_string()], EncodingFormat::Base64));
    }
}
