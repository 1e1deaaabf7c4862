//! The request bodies of the OpenAI API, and their checks: every field with OpenAI's meaning and
//! range, each violation a 400 that names the field. Unknown fields are ignored, as OpenAI does.

use crate::error::ApiError;
use generate::chat::ChatMessage;
use generate::sampler::{SamplerConfig, SamplerOrder};
use generate::GenerateOptions;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `stop`: one string or a list.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling fields shared by both endpoints (and our extensions).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Sampling {
    pub model: Option<String>,
    pub n: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<BTreeMap<String, f64>>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    // Extensions.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub num_beams: Option<u64>,
    pub length_penalty: Option<f64>,
    pub ignore_eos: Option<bool>,
}

/// `/v1/completions` `prompt`: a string, strings, token ids, or lists of token ids.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// A `/v1/completions` body.
#[derive(Deserialize, Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
    pub best_of: Option<u64>,
    pub suffix: Option<String>,
}

/// Message content: a string or a list of parts (only text parts are supported).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
}

/// A `/v1/chat/completions` body.
#[derive(Deserialize, Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub sampling: Sampling,
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u64>,
    pub tools: Option<serde_json::Value>,
}

/// `/tokenize`.
#[derive(Deserialize, Debug)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub parse_special: bool,
}

/// `/detokenize`.
#[derive(Deserialize, Debug)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u64>,
}

/// The most stop strings (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// The most bytes of one stop string.
pub const MAX_STOP_BYTES: usize = 1024;

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

fn in_range(param: &str, value: Option<f64>, lo: f64, hi: f64, default: f64) -> Result<f32, ApiError> {
    let v = value.unwrap_or(default);
    if !(v >= lo && v <= hi) {
        return Err(bad(param, format!("{param} must be between {lo} and {hi}, got {v}")));
    }
    Ok(v as f32)
}

/// What both endpoints turn a body into.
pub struct Plan {
    pub options: GenerateOptions,
    pub n: usize,
    /// Tokens to generate when the body gives no limit: the rest of the context.
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    /// Beam search: (num_beams, length_penalty); `n` hypotheses are returned.
    pub beams: Option<(usize, f64)>,
}

impl Sampling {
    /// Checks every field and builds the generation options. `logprobs` is how many top
    /// alternatives to report (`None`: no log-probabilities).
    pub fn plan(&self, n_vocab: usize, max_seqs: usize, logprobs: Option<usize>, max_tokens: Option<u64>) -> Result<Plan, ApiError> {
        let n = self.n.unwrap_or(1);
        if n == 0 || n > 128 {
            return Err(bad("n", format!("n must be between 1 and 128, got {n}")));
        }
        if n as usize > max_seqs {
            return Err(bad("n", format!("n = {n} is more than the {max_seqs} sequences this server runs at once (--max-seqs)")));
        }
        let num_beams = self.num_beams.unwrap_or(1);
        if num_beams == 0 || num_beams as usize > max_seqs {
            return Err(bad(
                "num_beams",
                format!("num_beams must be between 1 and the {max_seqs} sequences this server runs at once, got {num_beams}"),
            ));
        }
        if self.length_penalty.is_some_and(|l| !l.is_finite()) {
            return Err(bad("length_penalty", "length_penalty must be a finite number"));
        }
        let beams = if num_beams > 1 {
            if n > num_beams {
                return Err(bad(
                    "n",
                    format!("with beam search n is the number of best hypotheses returned: at most num_beams = {num_beams}, got {n}"),
                ));
            }
            if logprobs.is_some() {
                return Err(bad("logprobs", "log-probabilities are not available with beam search"));
            }
            Some((num_beams as usize, self.length_penalty.unwrap_or(1.0)))
        } else {
            None
        };
        let temperature = in_range("temperature", self.temperature, 0.0, 2.0, 1.0)?;
        let top_p = in_range("top_p", self.top_p, 0.0, 1.0, 1.0)?;
        if top_p == 0.0 {
            return Err(bad("top_p", "top_p must be greater than 0 (use temperature 0 for greedy decoding)"));
        }
        let presence_penalty = in_range("presence_penalty", self.presence_penalty, -2.0, 2.0, 0.0)?;
        let frequency_penalty = in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0, 0.0)?;
        let min_p = in_range("min_p", self.min_p, 0.0, 1.0, 0.0)?;
        let repeat_penalty = in_range("repetition_penalty", self.repetition_penalty, 0.01, 100.0, 1.0)?;
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX).min(n_vocab),
            Some(k) => return Err(bad("top_k", format!("top_k must be -1 (off) or a positive number, got {k}"))),
        };
        let mut logit_bias = Vec::new();
        for (id, &bias) in self.logit_bias.iter().flatten() {
            let token: u32 = id.trim().parse().map_err(|_| bad("logit_bias", format!("logit_bias keys are token ids, got {id:?}")))?;
            if token as usize >= n_vocab {
                return Err(bad("logit_bias", format!("logit_bias token {token} is outside the vocabulary of {n_vocab} tokens")));
            }
            if !(-100.0..=100.0).contains(&bias) {
                return Err(bad("logit_bias", format!("logit_bias values must be between -100 and 100, got {bias}")));
            }
            // OpenAI: -100 bans the token.
            logit_bias.push((token, if bias <= -100.0 { f32::NEG_INFINITY } else { bias as f32 }));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(bad("stop", format!("at most {MAX_STOP} stop sequences, got {}", stop.len())));
        }
        if stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(bad("stop", format!("stop sequences must be 1 to {MAX_STOP_BYTES} bytes long")));
        }
        let seed = match self.seed {
            Some(s) => s as u64,
            None => random_seed(),
        };
        if max_tokens == Some(0) {
            return Err(bad("max_tokens", "max_tokens must be at least 1"));
        }
        let sampler = SamplerConfig {
            temperature,
            top_k,
            top_p,
            min_p,
            seed,
            typical_p: 1.0,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            penalty_window: 64,
            logit_bias,
            // OpenAI's (and vLLM's) order: temperature before the truncations.
            order: SamplerOrder::HuggingFace,
            logprobs: logprobs.map_or(0, |k| k.max(1)),
        };
        let options = GenerateOptions { max_tokens: 0, stop, sampler, speculative: None, ignore_eos: self.ignore_eos.unwrap_or(false) };
        let include_usage = self.stream_options.as_ref().is_some_and(|o| o.include_usage);
        if self.stream_options.is_some() && !self.stream {
            return Err(bad("stream_options", "stream_options is only allowed with stream: true"));
        }
        Ok(Plan { options, n: n as usize, max_tokens, stream: self.stream, include_usage, beams })
    }
}

/// A seed for a request that gives none: different every time (the clock and a counter, mixed
/// by the sampler's own generator).
fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    generate::rng::Rng::new(nanos ^ COUNTER.fetch_add(1, Relaxed).rotate_left(32)).next_u64()
}

impl ChatRequest {
    /// The conversation as the chat template takes it.
    pub fn messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(bad("messages", "messages must hold at least one message"));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(bad("tools", "tools are not supported by this server"));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
                return Err(bad(&format!("messages[{i}].role"), format!("unsupported role {:?}: use system, user or assistant", m.role)));
            }
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            _ => {
                                return Err(bad(
                                    &format!("messages[{i}].content"),
                                    format!("content parts of type {:?} are not supported: only text", p.kind),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            let role = if m.role == "developer" { "system".to_string() } else { m.role.clone() };
            out.push(ChatMessage { role, content });
        }
        Ok(out)
    }

    /// How many top alternatives to report.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match (self.logprobs, self.top_logprobs) {
            (_, Some(k)) if k > 20 => Err(bad("top_logprobs", format!("top_logprobs must be between 0 and 20, got {k}"))),
            (false, Some(k)) if k > 0 => Err(bad("top_logprobs", "top_logprobs requires logprobs: true")),
            (true, k) => Ok(Some(k.unwrap_or(0) as usize)),
            (false, _) => Ok(None),
        }
    }
}

impl CompletionRequest {
    /// The unsupported OpenAI fields, refused rather than ignored.
    pub fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.echo {
            return Err(bad("echo", "echo is not supported by this server"));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Err(bad("best_of", "best_of is not supported by this server"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(bad("suffix", "suffix is not supported by this server"));
        }
        Ok(())
    }

    /// How many top alternatives to report.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            Some(k) if k > 5 => Err(bad("logprobs", format!("logprobs must be between 0 and 5, got {k}"))),
            Some(k) => Ok(Some(k as usize)),
            None => Ok(None),
        }
    }
}

/// Parses a body as `T`: 400 for invalid UTF-8 or JSON, naming what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::bad_request(format!("the request body is not valid UTF-8: {e}"), None))?;
    serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}"), None))
}

/// A chat body checked: the conversation, the plan, and the log-probabilities asked for.
pub fn chat_plan(bytes: &[u8], n_vocab: usize, max_seqs: usize) -> Result<(ChatRequest, Vec<ChatMessage>, Plan, Option<usize>), ApiError> {
    let r: ChatRequest = parse_json(bytes)?;
    let messages = r.messages()?;
    let logprobs = r.logprobs()?;
    let limit = r.max_completion_tokens.or(r.sampling.max_tokens);
    let plan = r.sampling.plan(n_vocab, max_seqs, logprobs, limit)?;
    Ok((r, messages, plan, logprobs))
}

/// A completions body checked: the request, the plan, and the log-probabilities asked for.
pub fn completion_plan(bytes: &[u8], n_vocab: usize, max_seqs: usize) -> Result<(CompletionRequest, Plan, Option<usize>), ApiError> {
    let r: CompletionRequest = parse_json(bytes)?;
    r.check_unsupported()?;
    let logprobs = r.logprobs()?;
    // Completions default to 16 tokens, as OpenAI's do.
    let plan = r.sampling.plan(n_vocab, max_seqs, logprobs, Some(r.sampling.max_tokens.unwrap_or(16)))?;
    Ok((r, plan, logprobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Result<Plan, ApiError> {
        let s: Sampling = serde_json::from_str(json).map_err(|e| ApiError::bad_request(e.to_string(), None))?;
        s.plan(100, 8, None, s.max_tokens)
    }

    #[test]
    fn ranges_are_openais() {
        assert!(plan(r#"{"temperature": 2}"#).is_ok());
        for (json, param) in [
            (r#"{"temperature": 2.5}"#, "temperature"),
            (r#"{"top_p": 1.5}"#, "top_p"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"presence_penalty": -3}"#, "presence_penalty"),
            (r#"{"n": 0}"#, "n"),
            (r#"{"n": 9}"#, "n"),
            (r#"{"n": 1000000000}"#, "n"),
            (r#"{"stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"stop": ""}"#, "stop"),
            (r#"{"logit_bias": {"100": 1}}"#, "logit_bias"),
            (r#"{"logit_bias": {"x": 1}}"#, "logit_bias"),
            (r#"{"logit_bias": {"5": 101}}"#, "logit_bias"),
            (r#"{"max_tokens": 0}"#, "max_tokens"),
            (r#"{"top_k": -5}"#, "top_k"),
            (r#"{"stream_options": {"include_usage": true}}"#, "stream_options"),
        ] {
            let err = plan(json).err().unwrap_or_else(|| panic!("{json} accepted"));
            assert_eq!(err.param.as_deref(), Some(param), "{json}: {}", err.message);
            assert_eq!(err.status.as_u16(), 400);
        }
    }

    #[test]
    fn defaults_and_mappings() {
        let p = plan(r#"{"seed": -1, "logit_bias": {"7": -100, " 8": 2.5}, "stop": "x", "top_k": -1}"#).unwrap();
        assert_eq!(p.options.sampler.seed, u64::MAX);
        assert_eq!(p.options.sampler.temperature, 1.0);
        assert_eq!(p.options.sampler.logit_bias, vec![(8, 2.5), (7, f32::NEG_INFINITY)]); // keys in string order
        assert_eq!(p.options.stop, vec!["x".to_string()]);
        assert_eq!(p.options.sampler.top_k, 0);
        assert!(p.options.sampler.validate().is_ok());
        // Wrong types are serde errors that name what was expected.
        let err = serde_json::from_str::<Sampling>(r#"{"temperature": "hot"}"#).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
    }
}
