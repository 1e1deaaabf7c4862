//! `ferrolm`: the command line over the ferrolm crates.

mod bench;
mod fetch;
mod generate_cmd;
mod serve_cmd;
mod tokenize_cmd;
mod tokenizer_bench;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use generate::chat::{ChatMessage, ChatTemplate};
use generate::sampler::{SamplerConfig, SamplerOrder};
use generate::{GenerateOptions, PromptLookup, Session, Speculation, StopReason};
use gguf::GgufFile;
use indicatif::{ProgressBar, ProgressStyle};
use kernels::SumOrder;
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::Llama;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use tokenizer::Tokenizer;

#[derive(Parser)]
#[command(name = "ferrolm", version, about = "Run language models on your own machine (GGUF, CPU)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct ModelArgs {
    /// GGUF model file (default: SmolLM2-135M-Instruct Q4_1, fetched on first use)
    #[arg(long, short = 'm')]
    pub(crate) model: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Threads for the kernels (default: all cores)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Context size in tokens (default: the model's, at most 4096)
    #[arg(long)]
    ctx: Option<usize>,
    #[command(flatten)]
    order: OrderArgs,
}

#[derive(Args, Clone, Default)]
pub(crate) struct OrderArgs {
    /// How quantized products add up their blocks: `blocks` (one rounding per block, the
    /// default: fastest) or `llama-cpp` (llama.cpp's x86 order: its exact logits). Overrides
    /// FERROLM_SUM_ORDER
    #[arg(long, value_name = "ORDER", value_parser = ["blocks", "llama-cpp"])]
    sum_order: Option<String>,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Maximum number of tokens to generate
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 means greedy
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep only the K most likely tokens (0 = off)
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off)
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off)
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Random seed: the same seed reproduces the same text
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text is generated (repeatable; the stop text is not printed)
    #[arg(long)]
    stop: Vec<String>,
    /// Locally typical sampling: keep the most typical tokens up to this mass (1 = off)
    #[arg(long, default_value_t = 1.0)]
    typical_p: f32,
    /// Repetition penalty over the recent window: positive logits divided, negative multiplied (1 = off)
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// OpenAI frequency penalty: logit -= penalty * count in the window (0 = off)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// OpenAI presence penalty: logit -= penalty if the token is in the window (0 = off)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Tokens the penalties look back over (0 = the whole history)
    #[arg(long, default_value_t = 64)]
    penalty_window: usize,
    /// Add BIAS to a token's logit, as TOKEN=BIAS (repeatable; BIAS -inf bans the token)
    #[arg(long, value_parser = parse_logit_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Order of the sampler stages: llama-cpp (temperature last) or hf (temperature first)
    #[arg(long, default_value = "llama-cpp", value_parser = ["llama-cpp", "hf"])]
    sampler_order: String,
    /// Speculative decoding: `ngram` drafts from earlier text (prompt lookup), `draft` asks a
    /// draft model (--draft-model or --draft-layers); greedy output is unchanged, sampled output
    /// keeps its distribution
    #[arg(long, value_parser = ["ngram", "draft"])]
    speculative: Option<String>,
    /// Most tokens drafted per step: fewer are drafted while drafts are rejected, and none for a
    /// while when they keep being rejected
    #[arg(long, default_value_t = 4)]
    draft_k: usize,
    /// With --speculative draft: a smaller GGUF model with the same vocabulary
    #[arg(long, value_name = "PATH", conflicts_with = "draft_layers")]
    draft_model: Option<PathBuf>,
    /// With --speculative draft: draft with the model's own first N layers
    #[arg(long, value_name = "N")]
    draft_layers: Option<usize>,
    /// Longest n-gram matched by the prompt-lookup drafter
    #[arg(long, default_value_t = 6)]
    ngram: usize,
    /// Shortest n-gram match the prompt-lookup drafter drafts from (shorter matches are mostly
    /// wrong and cost more than they give)
    #[arg(long, default_value_t = generate::MIN_NGRAM)]
    ngram_min: usize,
    /// Report speculative acceptance and batch timings on stderr
    #[arg(long)]
    verbose: bool,
    /// Keep generating past end-of-generation tokens (benchmarks with a fixed token count)
    #[arg(long)]
    ignore_eos: bool,
    /// Report the log-probability of each generated token and of its N most likely alternatives
    #[arg(long, value_name = "N")]
    logprobs: Option<usize>,
}

fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let (token, bias) = s.split_once('=').ok_or_else(|| format!("expected TOKEN=BIAS, got {s:?}"))?;
    let token = token.trim().parse::<u32>().map_err(|e| format!("token id {token:?}: {e}"))?;
    let bias = bias.trim().parse::<f32>().map_err(|e| format!("bias {bias:?}: {e}"))?;
    Ok((token, bias))
}

impl SamplingArgs {
    fn options(&self) -> Result<GenerateOptions> {
        let order = if self.sampler_order == "hf" { SamplerOrder::HuggingFace } else { SamplerOrder::LlamaCpp };
        let sampler = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed: self.seed,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_window: self.penalty_window,
            logit_bias: self.logit_bias.clone(),
            order,
            logprobs: self.logprobs.unwrap_or(0),
        };
        if self.logprobs.is_some_and(|n| n > 20) {
            bail!("--logprobs must be at most 20 (as in the OpenAI API), got {}", self.logprobs.unwrap_or(0));
        }
        sampler.validate()?;
        if self.draft_k == 0 || self.draft_k > 64 || self.ngram == 0 || self.ngram > 16 {
            bail!("--draft-k must be in 1..=64 and --ngram in 1..=16, got {} and {}", self.draft_k, self.ngram);
        }
        if self.ngram_min == 0 || self.ngram_min > self.ngram {
            bail!("--ngram-min must be in 1..=--ngram ({}), got {}: lower --ngram-min or raise --ngram", self.ngram, self.ngram_min);
        }
        let speculative = match self.speculative.as_deref() {
            None => None,
            Some("ngram") => Some(Speculation::PromptLookup(PromptLookup { ngram: self.ngram, min_ngram: self.ngram_min, draft_len: self.draft_k })),
            Some(_) => {
                if self.draft_model.is_none() && self.draft_layers.is_none() {
                    bail!("--speculative draft needs a draft: --draft-model PATH (same vocabulary) or --draft-layers N (the model's first N layers)");
                }
                Some(Speculation::DraftModel { draft_len: self.draft_k })
            }
        };
        if speculative.is_none() && (self.draft_model.is_some() || self.draft_layers.is_some()) {
            bail!("--draft-model and --draft-layers need --speculative draft");
        }
        Ok(GenerateOptions { max_tokens: self.max_tokens, stop: self.stop.clone(), sampler, speculative, ignore_eos: self.ignore_eos })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt; prints only the generated text on stdout
    Generate {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// The prompt text
        #[arg(long, short = 'p', required_unless_present = "batch_file", conflicts_with = "batch_file")]
        prompt: Option<String>,
        /// Treat special tokens written in the prompt (like <|im_start|>) as plain text
        #[arg(long)]
        no_special: bool,
        /// JSON lines of prompts ({"prompt": ..., optional "max_tokens", "temperature", "seed",
        /// "stop", "id"}), decoded together; results as JSON lines with --json
        #[arg(long, value_name = "FILE")]
        batch_file: Option<PathBuf>,
        /// With --batch-file: the most prompts decoded together (1 runs them one after another)
        #[arg(long, default_value_t = 8)]
        max_batch: usize,
        /// Completions of the prompt, sharing its evaluation (completion i uses seed + i); with
        /// --num-beams, the best hypotheses
        #[arg(long, default_value_t = 1)]
        num_return_sequences: usize,
        /// Beam search with this many beams (deterministic; sampling settings are not used)
        #[arg(long)]
        num_beams: Option<usize>,
        /// Beam search: finished score = sum of log-probs / length^P (Hugging Face semantics)
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        length_penalty: f64,
        /// Beam search: the GNMT length penalty ((5 + length)^A / 6^A) instead of --length-penalty
        #[arg(long, value_name = "A", allow_negative_numbers = true)]
        gnmt_alpha: Option<f64>,
        /// Beam search: stop when num_beams hypotheses are done (true), by Hugging Face's
        /// heuristic (false), or only when no running beam can win (never)
        #[arg(long, default_value = "false", value_parser = ["true", "false", "never"])]
        early_stopping: String,
        /// Print results as JSON lines (text, tokens, stop_reason, logprobs)
        #[arg(long)]
        json: bool,
    },
    /// Serve the model over HTTP with OpenAI's API: continuous batching, prefix caching,
    /// streaming, metrics, and a chat page at /
    Serve(serve_cmd::ServeArgs),
    /// Chat interactively, with the model's chat template and history
    Chat {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// System prompt
        #[arg(long)]
        system: Option<String>,
    },
    /// Print token ids as JSON
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        /// A tokenizer file instead of the model's: a Hugging Face tokenizer.json or a GGUF
        #[arg(long, value_name = "PATH", conflicts_with = "model")]
        tokenizer: Option<PathBuf>,
        /// Treat special tokens in the text as plain text
        #[arg(long)]
        no_special: bool,
        /// Leave out the special tokens the tokenizer adds (BOS/EOS, [CLS]/[SEP])
        #[arg(long)]
        no_add_special: bool,
        /// Print {"ids": [...], "offsets": [[start, end], ...]} with each token's byte span
        #[arg(long)]
        offsets: bool,
        /// Where llama.cpp and Hugging Face tokenizers differ, reproduce `llama-cpp` (a byte
        /// without a token is a barrier; whitespace-run tokens are cut out whole) or `hf` (the
        /// byte is dropped before merging; whitespace runs merge as "▁"s)
        #[arg(long, default_value = "llama-cpp", value_parser = ["llama-cpp", "hf"])]
        compat: String,
        /// Text to tokenize
        #[arg(long, conflicts_with = "jsonl", required_unless_present = "jsonl")]
        text: Option<String>,
        /// File of JSON lines {"text": ...}; prints one JSON array per line
        #[arg(long)]
        jsonl: Option<PathBuf>,
    },
    /// Turn token ids back into text
    Detokenize {
        #[command(flatten)]
        model: ModelArgs,
        /// Token ids
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Describe a model file
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Measure prompt processing (pp) and generation (tg) speed, as llama-bench does
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt tokens processed in one batch (pp)
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Tokens generated one at a time (tg)
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        /// Tokens already in the KV cache when pp and tg start (llama-bench's -d)
        #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
        depth: usize,
        /// Threads (default: all cores)
        #[arg(short = 't', long)]
        threads: Option<usize>,
        /// Repetitions of each test (after one warm-up)
        #[arg(short = 'r', long, default_value_t = 5)]
        reps: usize,
        /// Also decode B sequences together (one forward per step), interleaved with one sequence
        #[arg(short = 'b', long, default_value_t = 1)]
        batch: usize,
        #[command(flatten)]
        order: OrderArgs,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Single-thread encode speed of the model's tokenizer in MB/s (and pathological inputs)
    TokenizerBench {
        #[command(flatten)]
        model: ModelArgs,
        /// Corpus: JSON lines {"text": ...}, one document each, or any other file as one document
        /// (default: the texts of tests/fixtures/tokenizer_golden.jsonl grown to 1 MiB)
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        /// Timed passes over the corpus (after one warm-up)
        #[arg(short = 'r', long, default_value_t = 5)]
        reps: usize,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        /// Also time one letter repeated and text without spaces at 100 KB, 300 KB and 1 MB
        #[arg(long)]
        pathological: bool,
    },
    /// Perplexity of a text file (llama.cpp's method)
    Perplexity {
        #[command(flatten)]
        model: ModelArgs,
        /// Threads for the kernels (default: all cores)
        #[arg(long, short = 't')]
        threads: Option<usize>,
        /// Text file to evaluate
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Tokens per chunk
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Print {"ppl": ..., "tokens": ...} as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        order: OrderArgs,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        // A closed stdout (`ferrolm generate ... | head`) is the reader saying it has enough.
        let broken_pipe = err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe));
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            run,
            sampling,
            prompt,
            no_special,
            batch_file,
            max_batch,
            num_return_sequences,
            num_beams,
            length_penalty,
            gnmt_alpha,
            early_stopping,
            json,
        } => {
            let beams = num_beams.map(|n| generate_cmd::BeamArgs { num_beams: n, length_penalty, gnmt_alpha, early_stopping });
            let req = generate_cmd::GenerateRequest {
                prompt: prompt.as_deref(),
                parse_special: !no_special,
                batch_file: batch_file.as_deref(),
                max_batch,
                num_return_sequences,
                beams,
                json,
            };
            generate_cmd::cmd_generate(&run, &sampling, &req)
        }
        Command::Chat { run, sampling, system } => cmd_chat(&run, &sampling, system),
        Command::Serve(args) => serve_cmd::cmd_serve(&args),
        Command::Tokenize { model, tokenizer, no_special, no_add_special, offsets, compat, text, jsonl } => {
            let hf_compat = compat == "hf";
            let how = tokenize_cmd::TokenizeHow { parse_special: !no_special, add_special: !no_add_special, offsets, hf_compat };
            tokenize_cmd::cmd_tokenize(&model, tokenizer.as_deref(), how, text, jsonl)
        }
        Command::Detokenize { model, ids } => {
            let (_, tok) = open_tokenizer(&model)?;
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= tok.vocab_size()) {
                bail!("token id {bad} is outside the vocabulary of {} tokens", tok.vocab_size());
            }
            println!("{}", tok.decode(&ids, true));
            Ok(())
        }
        Command::Info { model } => cmd_info(&model),
        Command::Perplexity { model, threads, file, ctx, json, order } => {
            cmd_perplexity(&RunArgs { model, threads, ctx: None, order }, &file, ctx, json)
        }
        Command::TokenizerBench { model, file, reps, json, pathological } => {
            let (_, tok) = open_tokenizer(&model)?;
            let name = fetch::resolve_model(model.model.as_deref())?;
            let name = name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            tokenizer_bench::run(&tok, &tokenizer_bench::TokenizerBenchArgs { file, reps, json, pathological }, &name)
        }
        Command::Bench { model, n_prompt, n_gen, depth, threads, reps, batch, json, order } => {
            if batch == 0 || batch > 256 {
                bail!("--batch must be between 1 and 256, got {batch}");
            }
            let run = RunArgs { model: model.clone(), threads, ctx: None, order };
            let (llama, _, _) = open_model(&run)?;
            let name = fetch::resolve_model(model.model.as_deref())?;
            let name = name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            bench::run(&llama, &bench::BenchArgs { n_prompt, n_gen, depth, batch, reps, json }, &name)
        }
    }
}

pub(crate) fn open_file(args: &ModelArgs) -> Result<(PathBuf, GgufFile)> {
    let path = fetch::resolve_model(args.model.as_deref())?;
    // The error names the path already.
    let file = GgufFile::open(&path)?;
    Ok((path, file))
}

pub(crate) fn open_tokenizer(args: &ModelArgs) -> Result<(GgufFile, Tokenizer)> {
    let (path, file) = open_file(args)?;
    let tok = tokenizer_from_gguf(&file).with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    Ok((file, tok))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Loads model and tokenizer; returns them with the context size to use.
pub(crate) fn open_model(run: &RunArgs) -> Result<(Llama, Tokenizer, usize)> {
    // A misspelt kernel setting is an error, not a silent default.
    kernels::matmul::check_env().map_err(anyhow::Error::msg)?;
    let (path, file) = open_file(&run.model)?;
    let tok = tokenizer_from_gguf(&file).with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    let threads = run.threads.unwrap_or_else(default_threads);
    if threads == 0 || threads > 1024 {
        bail!("--threads must be between 1 and 1024, got {threads}");
    }
    let mut model = Llama::from_file(file, threads).with_context(|| format!("cannot load the model in {}", path.display()))?;
    match run.order.sum_order.as_deref() {
        Some("llama-cpp") => model.set_sum_order(SumOrder::LlamaCpp),
        Some(_) => model.set_sum_order(SumOrder::Blocks),
        None => {}
    }
    let n_ctx = run.ctx.unwrap_or(model.config.n_ctx_train.min(4096));
    if n_ctx == 0 || n_ctx > model.config.n_ctx_train {
        bail!("--ctx must be between 1 and the model's context length {}, got {n_ctx}", model.config.n_ctx_train);
    }
    Ok((model, tok, n_ctx))
}

pub(crate) fn report(gen: &generate::Generation) {
    let rate = |n: usize, t: std::time::Duration| if t.as_secs_f64() > 0.0 { n as f64 / t.as_secs_f64() } else { 0.0 };
    let why = match gen.stop_reason {
        StopReason::EndOfGeneration => "end of generation",
        StopReason::StopString => "stop string",
        StopReason::MaxTokens => "token limit",
        StopReason::ContextFull => "context full",
        StopReason::Cancelled => "cancelled",
    };
    eprintln!(
        "[prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | stop: {why}]",
        gen.prompt_tokens,
        rate(gen.prompt_tokens, gen.prefill_time),
        gen.tokens.len(),
        rate(gen.tokens.len().saturating_sub(1), gen.decode_time),
    );
}

fn cmd_chat(run: &RunArgs, sampling: &SamplingArgs, system: Option<String>) -> Result<()> {
    let options = sampling.options()?;
    let (model, tok, n_ctx) = open_model(run)?;
    let template = match model.file().get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        Some(src) => ChatTemplate::new(src).context("the model's chat template does not compile")?,
        None => {
            eprintln!("ferrolm: the model has no chat template; using ChatML");
            ChatTemplate::chatml()
        }
    };
    let mut messages: Vec<ChatMessage> = system.into_iter().map(|content| ChatMessage { role: "system".into(), content }).collect();
    let draft = generate_cmd::open_draft(run, sampling, &model)?;
    let mut session = match &draft {
        Some(d) => Session::with_draft_model(&model, d, n_ctx, 256)?,
        None => Session::new(&model, n_ctx, 256)?,
    };
    eprintln!("ferrolm chat: type a message and press Enter; /reset forgets the conversation, /exit or Ctrl-D quits.");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages.retain(|m| m.role == "system");
                session.clear();
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage { role: "user".into(), content: line });
        // The messages' text stays plain: only the template's markers are control tokens.
        let ids = template.encode(&tok, &messages, true)?;
        if ids.len() >= n_ctx {
            messages.pop();
            eprintln!("ferrolm: the conversation no longer fits the context of {n_ctx} tokens; /reset to start over");
            continue;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let gen = session.generate(&tok, &ids, &options, &mut |text| out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok())?;
        writeln!(out)?;
        report(&gen);
        messages.push(ChatMessage { role: "assistant".into(), content: gen.text.trim().to_string() });
    }
    Ok(())
}

fn cmd_info(args: &ModelArgs) -> Result<()> {
    let (path, file) = open_file(args)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("file:          {} ({:.1} MB, GGUF v{})", path.display(), size as f64 / 1e6, file.version);
    if let Some(name) = file.get("general.name").and_then(|v| v.as_str()) {
        println!("name:          {name}");
    }
    println!("architecture:  {}", file.architecture()?);
    match model::LlamaConfig::from_gguf(&file) {
        Ok(c) => {
            println!("layers:        {}", c.n_layer);
            println!("embedding:     {}", c.n_embd);
            println!("heads:         {} query, {} key/value (head dim {})", c.n_head, c.n_head_kv, c.head_dim);
            println!("feed-forward:  {}", c.n_ff);
            println!("context:       {}", c.n_ctx_train);
            println!("rope base:     {}", c.rope_base);
        }
        Err(err) => println!("config:        not runnable here: {err}"),
    }
    let mut types: Vec<(String, usize, u64)> = Vec::new();
    let mut params = 0u64;
    for t in &file.tensors {
        params += t.n_elements;
        match types.iter_mut().find(|(n, _, _)| n == t.ggml_type.name()) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.n_bytes;
            }
            None => types.push((t.ggml_type.name().to_string(), 1, t.n_bytes)),
        }
    }
    println!("parameters:    {:.1} M in {} tensors", params as f64 / 1e6, file.tensors.len());
    for (name, count, bytes) in types {
        println!("  {name:<6} {count:>4} tensors, {:.1} MB", bytes as f64 / 1e6);
    }
    match tokenizer_from_gguf(&file) {
        Ok(tok) => {
            let id = |i: Option<u32>| i.map_or("none".to_string(), |i| format!("{i} {:?}", tok.id_to_token(i).unwrap_or("")));
            println!(
                "tokenizer:     {} ({} tokens), pre-tokenizer {}, bos {}, eos {}, add_bos {}",
                tok.model_name(),
                tok.vocab_size(),
                tok.pre_tokenizer().map_or("none".to_string(), |p| format!("{p:?}")),
                id(tok.bos_id()),
                id(tok.eos_id()),
                tok.add_bos()
            )
        }
        Err(err) => println!("tokenizer:     unsupported: {err}"),
    }
    let template = file.get("tokenizer.chat_template").and_then(|v| v.as_str());
    println!("chat template: {}", if template.is_some() { "present" } else { "absent" });
    Ok(())
}

fn cmd_perplexity(run: &RunArgs, path: &PathBuf, ctx: usize, json: bool) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    let (model, tok, _) = open_model(run)?;
    if ctx < 4 || ctx > model.config.n_ctx_train {
        bail!("--ctx must be between 4 and the model's context length {}, got {ctx}", model.config.n_ctx_train);
    }
    let tokens = tok.encode(&text, false);
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let bar = ProgressBar::new((tokens.len() / ctx) as u64);
    bar.set_style(
        ProgressStyle::with_template("perplexity {bar:30} {pos}/{len} chunks  ppl {msg}  eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = generate::perplexity(&model, &tokens, ctx, bos, &mut |_, _, ppl| {
        bar.set_message(format!("{ppl:.4}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::json!({"ppl": result.ppl, "tokens": result.tokens, "ctx": ctx, "chunks": result.chunks, "scored": result.scored}));
    } else {
        println!("perplexity: {:.4} ({} tokens, {} chunks of {ctx}, {} predictions scored)", result.ppl, result.tokens, result.chunks, result.scored);
    }
    Ok(())
}
