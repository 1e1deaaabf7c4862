//! From engine events to OpenAI responses: whole JSON objects, or server-sent event chunks.
//!
//! One HTTP request may be several engine requests (a list of prompts); their events arrive on
//! one channel tagged with the prompt's index, and choice `i` of prompt `p` is index `p * n + i`
//! of the response, as OpenAI numbers them.

use crate::error::ApiError;
use engine::{Event, Handle, Usage};
use generate::sampler::Logprobs;
use generate::StopReason;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedReceiver;

/// Which API the answer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// A request in flight: its engine requests and the channel their events arrive on.
pub struct Job {
    pub rx: UnboundedReceiver<(usize, Event)>,
    /// Dropping them cancels the engine requests (a client that went away).
    pub handles: Vec<Handle>,
    pub prompts: usize,
    pub n: usize,
}

/// How to write the answer, and what it has gathered so far.
pub struct Shape {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    /// Top alternatives per token (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
    pub include_usage: bool,
    pub tokenizer: Arc<Tokenizer>,
    pub path: &'static str,
    pub started: Instant,
    pub first_token: Option<Instant>,
    usage: Usage,
    /// Generated tokens seen so far (the usage comes only at the end).
    tokens_seen: usize,
    /// Prompt tokens submitted.
    prompt_tokens: usize,
    remaining: usize,
    texts: Vec<String>,
    finish: Vec<Option<&'static str>>,
    logprob_items: Vec<Vec<Logprobs>>,
    role_sent: Vec<bool>,
    logged: bool,
}

/// OpenAI's `finish_reason`.
pub fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndOfGeneration | StopReason::StopString | StopReason::Cancelled => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

/// What a stream step produced.
pub enum Out {
    /// Chunks to send.
    Chunks(Vec<Value>),
    /// Every engine request ended: the last chunks (usage), then `[DONE]`.
    End(Vec<Value>),
    /// A failure mid-way: one error event, then the end.
    Error(ApiError),
}

impl Shape {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        model: String,
        logprobs: Option<usize>,
        include_usage: bool,
        tokenizer: Arc<Tokenizer>,
        path: &'static str,
        prompts: usize,
        n: usize,
    ) -> Shape {
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        let choices = prompts * n;
        Shape {
            kind,
            id: format!("{prefix}-{:016x}", crate::unique_id()),
            created,
            model,
            logprobs,
            include_usage,
            tokenizer,
            path,
            started: Instant::now(),
            first_token: None,
            usage: Usage::default(),
            tokens_seen: 0,
            prompt_tokens: 0,
            remaining: prompts,
            texts: vec![String::new(); choices],
            finish: vec![None; choices],
            logprob_items: vec![Vec::new(); choices],
            role_sent: vec![false; choices],
            logged: false,
        }
    }

    fn object(&self, stream: bool) -> &'static str {
        match (self.kind, stream) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn token_text(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self.tokenizer.token_bytes(id).unwrap_or_default().to_vec();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// Chat's `logprobs.content` entries.
    fn chat_logprobs(&self, items: &[Logprobs]) -> Value {
        let k = self.logprobs.unwrap_or(0);
        let content: Vec<Value> = items
            .iter()
            .map(|lp| {
                let (token, bytes) = self.token_text(lp.token);
                let top: Vec<Value> = lp
                    .top
                    .iter()
                    .take(k)
                    .map(|&(id, logprob)| {
                        let (token, bytes) = self.token_text(id);
                        json!({"token": token, "logprob": logprob, "bytes": bytes})
                    })
                    .collect();
                json!({"token": token, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top})
            })
            .collect();
        json!({"content": content})
    }

    /// Completions' `logprobs` object; `offset` is where the text of these tokens starts.
    fn completion_logprobs(&self, items: &[Logprobs], mut offset: usize) -> Value {
        let k = self.logprobs.unwrap_or(0);
        let (mut tokens, mut token_logprobs, mut top_logprobs, mut text_offset) = (vec![], vec![], vec![], vec![]);
        for lp in items {
            let (token, _) = self.token_text(lp.token);
            text_offset.push(offset);
            offset += token.len();
            tokens.push(token);
            token_logprobs.push(json!(lp.logprob));
            let mut top = serde_json::Map::new();
            for &(id, logprob) in lp.top.iter().take(k) {
                top.insert(self.token_text(id).0, json!(logprob));
            }
            top.entry(self.token_text(lp.token).0).or_insert(json!(lp.logprob));
            top_logprobs.push(Value::Object(top));
        }
        json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": text_offset})
    }

    fn usage_json(&self) -> Value {
        let u = self.usage;
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        })
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        let mut c = json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": choices});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        if self.kind == Kind::Chat {
            c["system_fingerprint"] = json!(crate::FINGERPRINT);
        }
        c
    }

    /// Takes one event; for a stream, returns the chunks it makes.
    pub fn take(&mut self, prompt: usize, n: usize, event: Event) -> Out {
        match event {
            Event::Delta { choice, text, tokens, logprobs } => {
                let index = prompt * n + choice;
                self.first_token.get_or_insert_with(Instant::now);
                self.tokens_seen += tokens;
                if text.is_empty() && (logprobs.is_empty() || self.logprobs.is_none()) {
                    return Out::Chunks(Vec::new());
                }
                let offset = self.texts[index].len();
                self.texts[index].push_str(&text);
                let mut chunks = Vec::new();
                let lp = self.logprobs.is_some() && !logprobs.is_empty();
                match self.kind {
                    Kind::Chat => {
                        if !self.role_sent[index] {
                            self.role_sent[index] = true;
                            chunks.push(self.chunk(vec![
                                json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
                            ]));
                        }
                        let logprobs_json = if lp { self.chat_logprobs(&logprobs) } else { Value::Null };
                        chunks.push(
                            self.chunk(vec![json!({"index": index, "delta": {"content": text}, "logprobs": logprobs_json, "finish_reason": null})]),
                        );
                    }
                    Kind::Completion => {
                        let logprobs_json = if lp { self.completion_logprobs(&logprobs, offset) } else { Value::Null };
                        chunks.push(self.chunk(vec![json!({"index": index, "text": text, "logprobs": logprobs_json, "finish_reason": null})]));
                    }
                }
                self.logprob_items[index].extend(logprobs);
                Out::Chunks(chunks)
            }
            Event::Finished { choice, reason, .. } => {
                let index = prompt * n + choice;
                let reason = finish_reason(reason);
                self.finish[index] = Some(reason);
                let choice = match self.kind {
                    Kind::Chat => {
                        let mut chunks = Vec::new();
                        if !self.role_sent[index] {
                            self.role_sent[index] = true;
                            chunks.push(self.chunk(vec![
                                json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
                            ]));
                        }
                        chunks.push(self.chunk(vec![json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})]));
                        return Out::Chunks(chunks);
                    }
                    Kind::Completion => json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason}),
                };
                Out::Chunks(vec![self.chunk(vec![choice])])
            }
            Event::Done(usage) => {
                self.usage.prompt_tokens += usage.prompt_tokens;
                self.usage.completion_tokens += usage.completion_tokens;
                self.usage.cached_tokens += usage.cached_tokens;
                self.remaining -= 1;
                if self.remaining > 0 {
                    return Out::Chunks(Vec::new());
                }
                self.log("200");
                let mut last = Vec::new();
                if self.include_usage {
                    let mut c = self.chunk(Vec::new());
                    c["usage"] = self.usage_json();
                    last.push(c);
                }
                Out::End(last)
            }
            Event::Error { message } => {
                self.log("500");
                Out::Error(ApiError::internal(message))
            }
        }
    }

    /// The whole answer (not streamed).
    pub fn full(&self) -> Value {
        let choices: Vec<Value> = (0..self.texts.len())
            .map(|i| {
                let finish = self.finish[i].unwrap_or("stop");
                match self.kind {
                    Kind::Chat => {
                        let logprobs = if self.logprobs.is_some() { self.chat_logprobs(&self.logprob_items[i]) } else { Value::Null };
                        json!({"index": i, "message": {"role": "assistant", "content": self.texts[i]}, "logprobs": logprobs, "finish_reason": finish})
                    }
                    Kind::Completion => {
                        let logprobs = if self.logprobs.is_some() { self.completion_logprobs(&self.logprob_items[i], 0) } else { Value::Null };
                        json!({"index": i, "text": self.texts[i], "logprobs": logprobs, "finish_reason": finish})
                    }
                }
            })
            .collect();
        let mut v = json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model, "choices": choices, "usage": self.usage_json()});
        if self.kind == Kind::Chat {
            v["system_fingerprint"] = json!(crate::FINGERPRINT);
        }
        v
    }

    /// Records the prompt tokens submitted (for the log line of a request that never finished).
    pub fn set_prompt_tokens(&mut self, n: usize) {
        self.prompt_tokens = n;
    }

    /// One line per request on stderr.
    pub fn log(&mut self, status: &str) {
        if self.logged {
            return;
        }
        self.logged = true;
        let ttft = self.first_token.map(|t| format!("{:.3}s", t.duration_since(self.started).as_secs_f64())).unwrap_or_else(|| "-".into());
        let mut u = self.usage;
        if self.remaining > 0 {
            // It ended early: what was seen so far.
            u.prompt_tokens = self.prompt_tokens;
            u.completion_tokens = self.tokens_seen;
        }
        eprintln!(
            "ferrolm serve: POST {} {status} {} prompt={} cached={} completion={} ttft={ttft} total={:.3}s",
            self.path,
            self.id,
            u.prompt_tokens,
            u.cached_tokens,
            u.completion_tokens,
            self.started.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Shape {
    fn drop(&mut self) {
        // A stream dropped before its end: the client went away.
        self.log("499 (client closed the connection)");
    }
}
