//! engine: the serving loop between the HTTP server and the model.
//!
//! An [`Engine`] owns the model, one pool of KV blocks and a scheduler ([`core`]) on a thread of
//! its own. Requests join with [`Engine::submit`] and leave between steps (iteration-level
//! continuous batching): each step is one forward call that mixes the running sequences' decode
//! tokens with chunks of prompts, within one token budget. Whatever it generates goes back
//! through the request's [`Sink`] as [`Event`]s; a sink that reports its receiver gone, or a
//! dropped [`Handle`], cancels the request and frees its blocks at once.
//!
//! The pool's prefix cache lets requests that share a prompt prefix (a system prompt, a chat
//! history) skip computing it; `n > 1` choices fork the prompt's blocks; when blocks run out the
//! newest request is preempted and later recomputed. Memory is bounded by construction: the pool,
//! the scratch and the queue have fixed sizes.

pub mod core;
pub mod metrics;

pub use crate::core::{Core, StepStats};
pub use metrics::Metrics;

use generate::beam::{BeamConfig, BeamError};
use generate::sampler::{Logprobs, SamplerError};
use generate::{GenerateOptions, StopReason};
use model::{KvType, Llama, LlamaConfig, ModelError, KV_BLOCK};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

/// Sizes and limits of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The most positions of one sequence (prompt and generated tokens).
    pub n_ctx: usize,
    /// The most sequences decoded together.
    pub max_seqs: usize,
    /// The most tokens in one forward call (decodes and prompt chunks together).
    pub max_batch_tokens: usize,
    /// Bytes of KV cache (keys and values of every layer, f16).
    pub kv_memory: u64,
    /// The most requests waiting to start; more are refused.
    pub queue: usize,
    /// Touch the whole KV cache at start ([`model::KvPool::prefault`]; `ferrolm serve` does), so
    /// that the first requests do not pay for the kernel's page zeroing.
    pub prefault_kv: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { n_ctx: 8192, max_seqs: 64, max_batch_tokens: 512, kv_memory: 1 << 30, queue: 256, prefault_kv: false }
    }
}

impl EngineConfig {
    /// Bytes of one KV block of `model` (every layer, keys and values) in `kv_type`.
    pub fn block_bytes(model: &LlamaConfig, kv_type: KvType) -> u64 {
        2 * kv_type.bytes((model.n_layer * KV_BLOCK * model.kv_dim()) as u128) as u64
    }

    /// Blocks that `kv_memory` holds for `model` in `kv_type`.
    pub fn kv_blocks(&self, model: &LlamaConfig, kv_type: KvType) -> usize {
        (self.kv_memory / Self::block_bytes(model, kv_type).max(1)).min(u32::MAX as u64 - 1) as usize
    }
}

/// One request: a prompt and how to continue it, `n` times.
#[derive(Clone, Debug)]
pub struct Request {
    /// Prompt token ids (BOS included when the model wants it).
    pub prompt: Vec<u32>,
    /// Token limit, stop strings, sampler (choice i samples with seed + i).
    pub options: GenerateOptions,
    /// Completions of the prompt, sharing its KV blocks.
    pub n: usize,
    /// Beam search instead of sampling (its `num_return_sequences` hypotheses are the choices;
    /// `n` is then ignored). The beams decode together and fork the prompt's blocks.
    pub beam: Option<BeamConfig>,
}

/// Token counts of a finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens over every choice.
    pub completion_tokens: usize,
    /// Prompt tokens found in the prefix cache, not computed again.
    pub cached_tokens: usize,
}

/// What a request receives, in order.
#[derive(Clone, Debug)]
pub enum Event {
    /// Choice `choice` decided `tokens` more tokens (1 per step; 0 for the text held back until
    /// the end), whose text may be empty while it is held back; with their log-probabilities
    /// when they were asked for.
    Delta { choice: usize, text: String, tokens: usize, logprobs: Vec<Logprobs> },
    /// Choice `choice` ended after `tokens` generated tokens.
    Finished { choice: usize, reason: StopReason, tokens: usize },
    /// Every choice ended; the last event.
    Done(Usage),
    /// The request failed; the last event.
    Error { message: String },
}

/// Where a request's events go; returns `false` when nobody listens any more (the request is
/// then cancelled).
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds its limit of waiting requests.
    #[error("the server is busy: {0} requests are already waiting; retry later")]
    QueueFull(usize),
    /// The engine is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The prompt does not fit in one sequence.
    #[error("the prompt has {tokens} tokens but the context holds {n_ctx}: shorten it")]
    PromptTooLong { tokens: usize, n_ctx: usize },
    /// No prompt tokens.
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    /// A token id past the vocabulary.
    #[error("token id {token} is outside the vocabulary of {n_vocab} tokens")]
    InvalidToken { token: u32, n_vocab: usize },
    /// More choices than sequences run at once.
    #[error("n = {n} completions is more than the {max} sequences this server runs at once")]
    TooManyChoices { n: usize, max: usize },
    /// Sampler settings out of range.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// Beam-search settings out of range.
    #[error(transparent)]
    Beam(#[from] BeamError),
}

/// A submitted request; dropping it cancels the request (a no-op once it ended).
pub struct Handle {
    id: u64,
    tx: mpsc::Sender<Command>,
}

impl Handle {
    /// The request's id (unique per engine).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Cancel(self.id));
    }
}

enum Command {
    Submit(u64, Box<Request>, Sink, Instant),
    Cancel(u64),
    Shutdown,
}

/// The engine thread and what the server shares with it.
pub struct Engine {
    tx: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
    next_id: AtomicU64,
    config: EngineConfig,
    n_vocab: usize,
    n_blocks: usize,
}

/// What can stop an engine from starting.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pool or scratch does not fit in memory, or the model is unusable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A setting out of range.
    #[error("{0}")]
    Config(String),
}

impl Engine {
    /// Starts the engine thread over `model`; fails if the settings are out of range or the KV
    /// pool does not fit.
    pub fn start(model: Llama, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> Result<Engine, EngineError> {
        let block = EngineConfig::block_bytes(&model.config, model.kv_type());
        if config.max_seqs == 0 || config.max_batch_tokens == 0 || config.n_ctx == 0 {
            return Err(EngineError::Config("--max-seqs, --max-batch-tokens and --ctx must be at least 1".into()));
        }
        let n_blocks = config.kv_blocks(&model.config, model.kv_type());
        if n_blocks * KV_BLOCK < config.n_ctx {
            return Err(EngineError::Config(format!(
                "--kv-memory {} holds {} positions, less than one context of {}: raise it to at least {} or lower --ctx",
                config.kv_memory,
                n_blocks * KV_BLOCK,
                config.n_ctx,
                config.n_ctx.div_ceil(KV_BLOCK) as u64 * block
            )));
        }
        let metrics = Arc::new(Metrics::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let n_vocab = model.config.n_vocab;
        let mut core = Core::new(model, tokenizer, config.clone(), metrics.clone(), queued.clone())?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferrolm-engine".into())
            .spawn(move || run(&mut core, rx))
            .map_err(|e| EngineError::Config(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine {
            tx,
            thread: Some(thread),
            metrics,
            queued,
            closing: Arc::new(AtomicBool::new(false)),
            next_id: AtomicU64::new(1),
            config,
            n_vocab,
            n_blocks,
        })
    }

    /// Checks a request and queues it; its events go to `sink`.
    pub fn submit(&self, request: Request, sink: Sink) -> Result<Handle, SubmitError> {
        if self.closing.load(Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        self.check(&request)?;
        // Take a place in the queue, or refuse.
        let limit = self.config.queue;
        if self.queued.fetch_update(Relaxed, Relaxed, |q| (q < limit).then_some(q + 1)).is_err() {
            self.metrics.rejected.fetch_add(1, Relaxed);
            return Err(SubmitError::QueueFull(limit));
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        if self.tx.send(Command::Submit(id, Box::new(request), sink, Instant::now())).is_err() {
            self.queued.fetch_sub(1, Relaxed);
            return Err(SubmitError::ShuttingDown);
        }
        Ok(Handle { id, tx: self.tx.clone() })
    }

    /// The checks [`Engine::submit`] makes before queueing.
    pub fn check(&self, request: &Request) -> Result<(), SubmitError> {
        let tokens = request.prompt.len();
        if tokens == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if tokens > self.config.n_ctx {
            return Err(SubmitError::PromptTooLong { tokens, n_ctx: self.config.n_ctx });
        }
        if let Some(&token) = request.prompt.iter().find(|&&t| t as usize >= self.n_vocab) {
            return Err(SubmitError::InvalidToken { token, n_vocab: self.n_vocab });
        }
        let width = request.beam.as_ref().map_or(request.n, |b| b.num_beams);
        if request.n == 0 || width > self.config.max_seqs {
            return Err(SubmitError::TooManyChoices { n: width, max: self.config.max_seqs });
        }
        if let Some(b) = &request.beam {
            b.validate()?;
        }
        request.options.sampler.validate()?;
        Ok(())
    }

    /// Stops taking requests; the running and waiting ones finish. See [`Engine::join`].
    pub fn shutdown(&self) {
        self.closing.store(true, Relaxed);
        let _ = self.tx.send(Command::Shutdown);
    }

    /// Whether [`Engine::shutdown`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Waits for the engine thread to finish its work after [`Engine::shutdown`].
    pub fn join(mut self) {
        self.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The settings it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// KV blocks in its pool.
    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// The engine thread: take commands, step while there is work, sleep on the channel when idle.
fn run(core: &mut Core, rx: mpsc::Receiver<Command>) {
    let mut closing = false;
    loop {
        // Idle: block until something arrives. Busy: take what has arrived and go on.
        if core.is_idle() {
            if closing {
                return;
            }
            match rx.recv() {
                Ok(cmd) => closing |= apply(core, cmd),
                Err(_) => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            closing |= apply(core, cmd);
        }
        if core.is_idle() {
            continue;
        }
        match core.step() {
            Ok(stats) if stats.tokens == 0 => {
                // Nothing could run (waiting for blocks): wait for a command rather than spin.
                if let Ok(cmd) = rx.recv_timeout(Duration::from_millis(5)) {
                    closing |= apply(core, cmd);
                }
            }
            Ok(_) => {}
            Err(e) => core.fail_all(&format!("the model failed: {e}")),
        }
    }
}

/// Applies one command; `true` for shutdown.
fn apply(core: &mut Core, cmd: Command) -> bool {
    match cmd {
        Command::Submit(id, request, sink, arrived) => core.add(id, *request, sink, arrived),
        Command::Cancel(id) => core.cancel(id),
        Command::Shutdown => return true,
    }
    false
}
