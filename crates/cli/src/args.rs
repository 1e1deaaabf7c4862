//! The command line's arguments: the subcommands and the flags they share.

use crate::serve_cmd;
use anyhow::{bail, Result};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};
use generate::sampler::{SamplerConfig, SamplerOrder};
use generate::{GenerateOptions, PromptLookup, Speculation};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ferrolm", version, about = "Run language models on your own machine (GGUF, CPU)")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
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
    pub(crate) threads: Option<usize>,
    /// Context size in tokens (default: the model's, at most 4096)
    #[arg(long)]
    pub(crate) ctx: Option<usize>,
    #[command(flatten)]
    pub(crate) compute: ComputeArgs,
    #[command(flatten)]
    pub(crate) lora: LoraArgs,
}

#[derive(Args, Clone, Default)]
pub(crate) struct LoraArgs {
    /// A LoRA adapter to apply (unmerged): a PEFT folder (adapter_model.safetensors and
    /// adapter_config.json, as `ferrolm finetune` and PEFT write it) or llama.cpp's LoRA GGUF
    #[arg(long, value_name = "PATH")]
    pub(crate) lora: Option<PathBuf>,
    /// Multiplies the adapter's scaling (alpha / r)
    #[arg(long, value_name = "S", requires = "lora")]
    pub(crate) lora_scale: Option<f32>,
}

/// How the model computes: the products' summation order and what the KV cache stores.
#[derive(Args, Clone, Default)]
pub(crate) struct ComputeArgs {
    /// How quantized products add up their blocks: `blocks` (one rounding per block, the
    /// default: fastest) or `llama-cpp` (llama.cpp's x86 order: its exact logits). Overrides
    /// FERROLM_SUM_ORDER
    #[arg(long, value_name = "ORDER", value_parser = ["blocks", "llama-cpp"])]
    pub(crate) sum_order: Option<String>,
    /// What the KV cache stores: `f16` (the default) or `q8_0` (8-bit blocks of 32, 53% of the
    /// memory; attention then runs the block order's kernel, in either --sum-order)
    #[arg(long, value_name = "TYPE", value_parser = ["f16", "q8_0"])]
    pub(crate) kv_type: Option<String>,
}

#[derive(Args, Clone)]
pub(crate) struct SamplingArgs {
    /// Maximum number of tokens to generate
    #[arg(long, short = 'n', default_value_t = 256)]
    pub(crate) max_tokens: usize,
    /// Sampling temperature; 0 means greedy
    #[arg(long, default_value_t = 0.8)]
    pub(crate) temperature: f32,
    /// Keep only the K most likely tokens (0 = off)
    #[arg(long, default_value_t = 40)]
    pub(crate) top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1 = off)
    #[arg(long, default_value_t = 0.95)]
    pub(crate) top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off)
    #[arg(long, default_value_t = 0.05)]
    pub(crate) min_p: f32,
    /// Random seed: the same seed reproduces the same text
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Stop when this text is generated (repeatable; the stop text is not printed)
    #[arg(long)]
    pub(crate) stop: Vec<String>,
    /// Locally typical sampling: keep the most typical tokens up to this mass (1 = off)
    #[arg(long, default_value_t = 1.0)]
    pub(crate) typical_p: f32,
    /// Repetition penalty over the recent window: positive logits divided, negative multiplied (1 = off)
    #[arg(long, default_value_t = 1.0)]
    pub(crate) repeat_penalty: f32,
    /// OpenAI frequency penalty: logit -= penalty * count in the window (0 = off)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub(crate) frequency_penalty: f32,
    /// OpenAI presence penalty: logit -= penalty if the token is in the window (0 = off)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub(crate) presence_penalty: f32,
    /// Tokens the penalties look back over (0 = the whole history)
    #[arg(long, default_value_t = 64)]
    pub(crate) penalty_window: usize,
    /// Add BIAS to a token's logit, as TOKEN=BIAS (repeatable; BIAS -inf bans the token)
    #[arg(long, value_parser = parse_logit_bias)]
    pub(crate) logit_bias: Vec<(u32, f32)>,
    /// Order of the sampler stages: llama-cpp (temperature last) or hf (temperature first)
    #[arg(long, default_value = "llama-cpp", value_parser = ["llama-cpp", "hf"])]
    pub(crate) sampler_order: String,
    /// Speculative decoding: `ngram` drafts from earlier text (prompt lookup), `draft` asks a
    /// draft model (--draft-model or --draft-layers); greedy output is unchanged, sampled output
    /// keeps its distribution
    #[arg(long, value_parser = ["ngram", "draft"])]
    pub(crate) speculative: Option<String>,
    /// Most tokens drafted per step: fewer are drafted while drafts are rejected, and none for a
    /// while when they keep being rejected
    #[arg(long, default_value_t = 4)]
    pub(crate) draft_k: usize,
    /// With --speculative draft: a smaller GGUF model with the same vocabulary
    #[arg(long, value_name = "PATH", conflicts_with = "draft_layers")]
    pub(crate) draft_model: Option<PathBuf>,
    /// With --speculative draft: draft with the model's own first N layers
    #[arg(long, value_name = "N")]
    pub(crate) draft_layers: Option<usize>,
    /// Longest n-gram matched by the prompt-lookup drafter
    #[arg(long, default_value_t = 6)]
    pub(crate) ngram: usize,
    /// Shortest n-gram match the prompt-lookup drafter drafts from (shorter matches are mostly
    /// wrong and cost more than they give)
    #[arg(long, default_value_t = generate::MIN_NGRAM)]
    pub(crate) ngram_min: usize,
    /// Report speculative acceptance and batch timings on stderr
    #[arg(long)]
    pub(crate) verbose: bool,
    /// Keep generating past end-of-generation tokens (benchmarks with a fixed token count)
    #[arg(long)]
    pub(crate) ignore_eos: bool,
    /// Report the log-probability of each generated token and of its N most likely alternatives
    /// (not with --speculative, which does not compute them)
    #[arg(long, value_name = "N", conflicts_with = "speculative")]
    pub(crate) logprobs: Option<usize>,
}

fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let (token, bias) = s.split_once('=').ok_or_else(|| format!("expected TOKEN=BIAS, got {s:?}"))?;
    let token = token.trim().parse::<u32>().map_err(|e| format!("token id {token:?}: {e}"))?;
    let bias = bias.trim().parse::<f32>().map_err(|e| format!("bias {bias:?}: {e}"))?;
    Ok((token, bias))
}

impl SamplingArgs {
    pub(crate) fn options(&self) -> Result<GenerateOptions> {
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
        Ok(GenerateOptions { max_tokens: self.max_tokens, stop: self.stop.clone(), sampler, speculative, ignore_eos: self.ignore_eos })
    }
}

/// The flags beam search does not use (it is deterministic and reports no per-token
/// log-probabilities), and the batch file it does not read.
const BEAM_CONFLICTS: [&str; 15] = [
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "typical_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "penalty_window",
    "logit_bias",
    "sampler_order",
    "logprobs",
    "speculative",
    "batch_file",
];

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// "stop", "id"}), decoded together; results as JSON lines with --json. A prompt that
        /// fails (longer than the context, say) gets an error line ({"index", "id", "error"} with
        /// --json, on stderr otherwise), the others still run, and the exit status is 1
        #[arg(long, value_name = "FILE")]
        batch_file: Option<PathBuf>,
        /// With --batch-file: the most prompts decoded together (1 runs them one after another)
        #[arg(long, default_value_t = 8)]
        max_batch: usize,
        /// Completions of the prompt, sharing its evaluation (completion i uses seed + i); with
        /// --num-beams, the best hypotheses
        #[arg(long, default_value_t = 1)]
        num_return_sequences: usize,
        /// Beam search with this many beams (deterministic: sampling flags, --logprobs and
        /// --speculative are refused with it)
        #[arg(long, conflicts_with_all = BEAM_CONFLICTS)]
        num_beams: Option<usize>,
        /// Beam search: finished score = sum of log-probs / length^P (Hugging Face semantics)
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        length_penalty: f64,
        /// Beam search: the GNMT length penalty ((5 + length)^A / 6^A) instead of --length-penalty
        #[arg(long, value_name = "A", allow_negative_numbers = true, conflicts_with = "length_penalty")]
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
        compute: ComputeArgs,
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
    /// Sentence embeddings of texts (all-MiniLM-L6-v2 by default), as JSON lines or .npy
    Embed(crate::embed_cmd::EmbedArgs),
    /// Cosine similarity of every row of A with every row of B (texts or embeddings), as JSON
    Similarity(crate::similarity_cmd::SimilarityArgs),
    /// Build or query an index of embeddings (exact cosine top-K)
    #[command(subcommand)]
    Index(crate::index_cmd::IndexCommand),
    /// Fine-tune a LoRA adapter on the model (the base stays frozen); --bench times training steps
    Finetune(crate::finetune_cmd::FinetuneArgs),
    /// Write a copy of the model with a LoRA adapter merged into its weights
    Merge(crate::merge_cmd::MergeArgs),
    /// Write a copy of a model (GGUF or Hugging Face folder) with its weights in another format
    Quantize(crate::quantize_cmd::QuantizeArgs),
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
        /// Evaluate only the first N chunks (llama-perplexity's --chunks)
        #[arg(long)]
        chunks: Option<usize>,
        /// Print {"ppl": ..., "tokens": ...} as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        compute: ComputeArgs,
        #[command(flatten)]
        lora: LoraArgs,
    },
}

/// Checks what clap's `conflicts_with` cannot express: flags given on the command line (a default
/// does not count) that only apply with another flag, or with a value of it. The error says which
/// flag would be ignored and what to do; it exits like clap's own usage errors (status 2).
pub(crate) fn check_flag_combinations(matches: &ArgMatches) -> Result<(), clap::Error> {
    let Some((name, sub)) = matches.subcommand() else { return Ok(()) };
    let problem = match name {
        "generate" => sampling_flags_unused(sub).or_else(|| generate_flags_unused(sub)),
        "chat" => sampling_flags_unused(sub),
        _ => None,
    };
    let Some(problem) = problem else { return Ok(()) };
    let mut cli = Cli::command();
    cli.build();
    let cmd = cli.find_subcommand_mut(name).expect("the subcommand just parsed");
    Err(cmd.error(ErrorKind::ArgumentConflict, problem))
}

/// Whether the user gave `id` on the command line (not a default).
fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

/// `--draft-*` and `--ngram*` without the `--speculative` mode they tune.
fn sampling_flags_unused(m: &ArgMatches) -> Option<String> {
    let mode = m.get_one::<String>("speculative").map(String::as_str);
    let wanted = |flag: &str, needs: &str| match mode {
        Some(mode) => format!("{flag} applies only to --speculative {needs}, not to --speculative {mode}: drop {flag} or use --speculative {needs}"),
        None => format!("{flag} applies only to --speculative {needs}: add --speculative {needs} or drop {flag}"),
    };
    for (id, flag) in [("draft_model", "--draft-model"), ("draft_layers", "--draft-layers")] {
        if given(m, id) && mode != Some("draft") {
            return Some(wanted(flag, "draft"));
        }
    }
    for (id, flag) in [("ngram", "--ngram"), ("ngram_min", "--ngram-min")] {
        if given(m, id) && mode != Some("ngram") {
            return Some(wanted(flag, "ngram"));
        }
    }
    if given(m, "draft_k") && mode.is_none() {
        return Some("--draft-k applies only to speculative decoding: add --speculative ngram|draft or drop --draft-k".into());
    }
    None
}

/// `--max-batch` without `--batch-file`, beam settings without `--num-beams`.
fn generate_flags_unused(m: &ArgMatches) -> Option<String> {
    if given(m, "max_batch") && !given(m, "batch_file") {
        return Some("--max-batch applies only to --batch-file: add --batch-file FILE or drop --max-batch".into());
    }
    for (id, flag) in [("length_penalty", "--length-penalty"), ("gnmt_alpha", "--gnmt-alpha"), ("early_stopping", "--early-stopping")] {
        if given(m, id) && !given(m, "num_beams") {
            return Some(format!("{flag} applies only to beam search: add --num-beams B or drop {flag}"));
        }
    }
    None
}
