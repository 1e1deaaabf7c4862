//! `ferrolm finetune`: train a LoRA adapter on the frozen model; `--bench` times training steps.

use crate::args::{ModelArgs, RunArgs};
use crate::load::open_model;
use anyhow::{bail, Context, Result};
use clap::Args;
use generate::sampler::SamplerConfig;
use generate::{generate_batch, BatchSizes, GenerateOptions};
use indicatif::{ProgressBar, ProgressStyle};
use kernels::loss::IGNORE_INDEX;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use train::adapter::{save_gguf, save_peft, ModelDims};
use train::data::{read_jsonl, Cursor, Dataset, Example, ExampleEncoder, LoadOptions, Overlong};
use train::optim::{cosine_lr, AdamW};
use train::trainer::Trainer;
use train::{Batch, FrozenFormat, LoraConfig, LoraParams, Target, TrainModel};

#[derive(Args)]
pub(crate) struct FinetuneArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Training data: JSON lines of {"messages": [...]} or {"prompt", "completion"}
    #[arg(long, required_unless_present = "bench")]
    pub(crate) data: Option<PathBuf>,
    /// Held-out data (default: a split of --data)
    #[arg(long)]
    pub(crate) eval: Option<PathBuf>,
    /// Directory for the adapter (PEFT layout and a GGUF) and checkpoints
    #[arg(long, required_unless_present = "bench")]
    pub(crate) out: Option<PathBuf>,
    /// LoRA rank r
    #[arg(long, default_value_t = 8)]
    pub(crate) rank: usize,
    /// LoRA alpha (scaling alpha / r)
    #[arg(long, default_value_t = 16.0)]
    pub(crate) alpha: f32,
    /// Scale by alpha / sqrt(r) (rsLoRA)
    #[arg(long)]
    pub(crate) rslora: bool,
    /// Dropout on the adapters' inputs
    #[arg(long, default_value_t = 0.0)]
    pub(crate) dropout: f32,
    /// Linear maps that get an adapter
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    pub(crate) targets: Vec<String>,
    /// Peak learning rate (AdamW)
    #[arg(long, default_value_t = 2e-4)]
    pub(crate) lr: f64,
    /// Passes over the training data
    #[arg(long, default_value_t = 3)]
    pub(crate) epochs: usize,
    /// Sequences per step
    #[arg(long, default_value_t = 8)]
    pub(crate) batch: usize,
    /// Longest sequence in tokens
    #[arg(long, default_value_t = 256)]
    pub(crate) seq_len: usize,
    /// Threads for the kernels (default: all cores)
    #[arg(long, short = 't')]
    pub(crate) threads: Option<usize>,
    /// Seed of initialisation, data order and dropout
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Sequences per optimizer step are --batch x this (gradient accumulation)
    #[arg(long, default_value_t = 1)]
    pub(crate) grad_accum: usize,
    /// Warm-up steps of the learning rate (default: 5% of the steps)
    #[arg(long)]
    pub(crate) warmup: Option<usize>,
    /// AdamW's decoupled weight decay
    #[arg(long, default_value_t = 0.0)]
    pub(crate) weight_decay: f64,
    /// Clip the gradient to this global norm (0: no clipping)
    #[arg(long, default_value_t = 1.0)]
    pub(crate) max_grad_norm: f64,
    /// Records longer than --seq-len: cut them (truncate) or leave them out (skip)
    #[arg(long, default_value = "truncate", value_parser = ["truncate", "skip"])]
    pub(crate) overlong: String,
    /// Held-out loss every this many steps (default: 4 times per epoch)
    #[arg(long)]
    pub(crate) eval_every: Option<usize>,
    /// Continue the checkpoint in --out (same data and settings)
    #[arg(long)]
    pub(crate) resume: bool,
    /// Stop after this many optimizer steps in total, saving a checkpoint that --resume
    /// continues (as Ctrl-C does)
    #[arg(long)]
    pub(crate) max_steps: Option<usize>,
    /// Also report the exact-match accuracy of greedy answers on the held-out examples, before
    /// and after training (the first learned span of each example is its answer)
    #[arg(long)]
    pub(crate) exact_match: bool,
    /// How the frozen weights are multiplied: `auto` (the default: bf16 where Intel AMX runs it,
    /// q8_0 elsewhere), `q8_0` (requantized to 8 bits, each product's input too, on the integer
    /// kernels: twice the speed of f32, 8-bit noise in the loss and gradients), `bf16` (AMX
    /// only: rounded to bf16, products summed in f32, 8 significant bits) or `f32` (dequantized,
    /// exact in f32, as PyTorch computes)
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "q8_0", "bf16"])]
    pub(crate) frozen: String,
    /// Time training steps on random tokens and print tokens/s
    #[arg(long)]
    pub(crate) bench: bool,
    /// With --bench: timed steps (after one warm-up step)
    #[arg(long, default_value_t = 3)]
    pub(crate) steps: usize,
    /// With --bench: print {"tokens_per_s": ...}
    #[arg(long)]
    pub(crate) json: bool,
}

/// The format `--frozen` names (`auto`: the fastest this machine runs), or an error for bf16
/// without AMX.
fn frozen_format(args: &FinetuneArgs) -> Result<FrozenFormat> {
    Ok(match args.frozen.as_str() {
        "auto" => FrozenFormat::fastest(),
        "q8_0" => FrozenFormat::Q8_0,
        "bf16" if !kernels::bf16mat::amx_available() => {
            bail!("--frozen bf16 runs on Intel AMX (Xeon Sapphire Rapids and later), which this CPU or OS does not offer: use --frozen q8_0 or f32")
        }
        "bf16" => FrozenFormat::Bf16,
        _ => FrozenFormat::F32,
    })
}

fn lora_config(args: &FinetuneArgs) -> Result<LoraConfig> {
    if args.rank == 0 || args.rank > 1024 {
        bail!("--rank must be between 1 and 1024, got {}", args.rank);
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be in [0, 1), got {}", args.dropout);
    }
    if !args.alpha.is_finite() || args.alpha <= 0.0 {
        bail!("--alpha must be a positive number, got {}", args.alpha);
    }
    let mut targets = Vec::new();
    for name in &args.targets {
        match Target::parse(name.trim()) {
            Some(t) if !targets.contains(&t) => targets.push(t),
            Some(_) => {}
            None => bail!("--targets: unknown map {name:?} (the maps are q,k,v,o,gate,up,down)"),
        }
    }
    targets.sort();
    Ok(LoraConfig { rank: args.rank, alpha: args.alpha, rslora: args.rslora, dropout: args.dropout, targets })
}

pub(crate) fn cmd_finetune(args: &FinetuneArgs) -> Result<()> {
    if args.bench {
        return bench(args);
    }
    train_adapter(args)
}

/// A data batch as the model's flat batch.
fn flat(examples: &[&Example]) -> Batch {
    let mut b = Batch::default();
    for e in examples {
        let start = b.tokens.len();
        b.tokens.extend_from_slice(&e.tokens);
        b.labels.extend_from_slice(&e.labels);
        b.seqs.push(start..b.tokens.len());
    }
    b
}

/// The held-out set in batches of `size`.
fn eval_batches(eval: &Dataset, size: usize) -> Vec<Batch> {
    let all: Vec<&Example> = eval.examples.iter().collect();
    all.chunks(size.max(1)).map(flat).collect()
}

/// Refuses a model whose frozen f32 weights (the training path keeps W and W^T of every matrix,
/// and the embeddings three times: lookup, head, head^T) would not fit in the memory available.
fn check_memory(c: &model::LlamaConfig) -> Result<()> {
    let (d, q, kv, f, v) = (c.n_embd as u128, c.q_dim() as u128, c.kv_dim() as u128, c.n_ff as u128, c.n_vocab as u128);
    let per_layer = 2 * (2 * q * d + 2 * kv * d + 3 * f * d);
    let bytes = 4 * (c.n_layer as u128 * per_layer + 3 * v * d);
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u128>().ok()).map(|kb| kb * 1024)
    });
    if let Some(available) = available {
        if bytes > available {
            bail!(
                "training this model needs about {:.1} GB for its frozen weights in f32 (W and W^T), and {:.1} GB are available: use a smaller model or free memory",
                bytes as f64 / 1e9,
                available as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// Greedy answers to the held-out examples against their first learned span: (exact matches,
/// examples). The prompt is everything before the span; the answer ends at the model's end of
/// turn; both are compared with surrounding whitespace trimmed.
fn exact_match(llama: &model::Llama, tok: &tokenizer::Tokenizer, eval: &Dataset) -> Result<(usize, usize)> {
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for e in &eval.examples {
        let Some(start) = e.labels.iter().position(|&l| l != IGNORE_INDEX) else { continue };
        let end = e.labels[start..].iter().position(|&l| l == IGNORE_INDEX).map_or(e.labels.len(), |n| start + n);
        let answer: Vec<u32> = e.tokens[start..end].iter().copied().filter(|&t| Some(t) != tok.eos_id()).collect();
        expected.push(tok.decode(&answer, false).trim().to_string());
        let options = GenerateOptions { max_tokens: end - start + 8, sampler: SamplerConfig::greedy(), ..GenerateOptions::default() };
        requests.push((e.tokens[..start].to_vec(), options));
    }
    let n_ctx = requests.iter().map(|(p, o)| p.len() + o.max_tokens).max().unwrap_or(1);
    let mut hits = 0;
    for (chunk, want) in requests.chunks(16).zip(expected.chunks(16)) {
        let gens = generate_batch(llama, tok, chunk, BatchSizes { n_ctx, prefill_chunk: 512 }, &mut |_, _| true)?;
        hits += gens.iter().zip(want).filter(|(g, w)| g.text.trim() == w.as_str()).count();
    }
    Ok((hits, expected.len()))
}

/// What a checkpoint keeps of the run besides the adapter: the settings that must not change,
/// and where the data stood.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug, Clone)]
struct RunState {
    cursor: Cursor,
    data: u64,
    lr: f64,
    epochs: usize,
    batch: usize,
    grad_accum: usize,
    seq_len: usize,
    seed: u64,
    warmup: usize,
    total_steps: usize,
    weight_decay: f64,
    max_grad_norm: f64,
    /// `--frozen` as resolved (`auto` is saved as the format it chose; checkpoints from before the
    /// option trained in f32).
    #[serde(default = "f32_name")]
    frozen: String,
    /// (step, train loss, held-out loss) so far.
    history: Vec<(usize, f64, Option<f64>)>,
}

fn f32_name() -> String {
    "f32".into()
}

fn train_adapter(args: &FinetuneArgs) -> Result<()> {
    let (Some(data_path), Some(out)) = (&args.data, &args.out) else { bail!("--data and --out are required (or --bench)") };
    if args.batch == 0 || args.grad_accum == 0 || args.epochs == 0 {
        bail!("--batch, --grad-accum and --epochs must be at least 1");
    }
    if args.seq_len < 2 {
        bail!("--seq-len must be at least 2, got {}", args.seq_len);
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    if !(args.max_grad_norm.is_finite() && args.max_grad_norm >= 0.0 && args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        bail!("--max-grad-norm and --weight-decay must be at least 0");
    }
    if args.eval_every == Some(0) || args.max_steps == Some(0) {
        bail!("--eval-every and --max-steps must be at least 1");
    }
    let config = lora_config(args)?;
    let checkpoint_dir = out.join("checkpoint");
    if args.resume && !checkpoint_dir.join("checkpoint.json").is_file() {
        bail!("--resume: there is no checkpoint in {} (run without --resume to start)", checkpoint_dir.display());
    }
    let run = RunArgs { model: args.model.clone(), threads: args.threads, ctx: None, compute: Default::default(), lora: Default::default() };
    let (llama, tok, _) = open_model(&run)?;
    if args.seq_len > llama.config.n_ctx_train {
        bail!("--seq-len {} is longer than the model's context {}", args.seq_len, llama.config.n_ctx_train);
    }
    let encoder = ExampleEncoder::from_gguf(&tok, llama.file()).context("the model's chat template")?;
    let overlong = if args.overlong == "skip" { Overlong::Skip } else { Overlong::Truncate };
    let options = LoadOptions { max_len: args.seq_len, overlong };
    // What the data looks like, printed once the run is known to start (errors come first).
    let mut notes = Vec::new();
    let (data, report) = read_jsonl(data_path, &encoder, options)?;
    notes.push(format!("{}: {report}", data_path.display()));
    let (train_set, eval_set) = match &args.eval {
        Some(path) => {
            let (eval, report) = read_jsonl(path, &encoder, options)?;
            notes.push(format!("{}: {report}", path.display()));
            (data, eval)
        }
        None => {
            let (train_set, eval) = data.split_held_out(args.seed);
            notes.push(format!(
                "held out {} of {} examples for evaluation (give --eval FILE to choose them)",
                eval.len(),
                train_set.len() + eval.len()
            ));
            (train_set, eval)
        }
    };
    if train_set.is_empty() {
        bail!("{}: no example to train on", data_path.display());
    }
    let per_step = args.batch.saturating_mul(args.grad_accum);
    let steps_per_epoch = train_set.len().div_ceil(per_step);
    let Some(total_steps) = steps_per_epoch.checked_mul(args.epochs).filter(|&n| n <= 100_000_000) else {
        bail!("--epochs {} makes more than 100,000,000 steps", args.epochs);
    };
    check_memory(&llama.config)?;
    let warmup = args.warmup.unwrap_or(total_steps / 20).min(total_steps);
    let eval_every = args.eval_every.unwrap_or((steps_per_epoch / 4).max(1));
    let start = Instant::now();
    let frozen = frozen_format(args)?;
    let model = TrainModel::<f32>::from_llama_as(&llama, llama.n_threads(), frozen, kernels::Level::current())?;
    notes.push(format!(
        "frozen weights ({}) ready in {:.1} s ({} threads, kernels {:?})",
        frozen.name(),
        start.elapsed().as_secs_f64(),
        model.n_threads(),
        kernels::Level::current()
    ));
    let params = LoraParams::init(&config, &model.config, args.seed);
    let opt = AdamW { weight_decay: args.weight_decay, ..AdamW::default() };
    let mut trainer = Trainer::new(&model, params, opt);
    let mut state = RunState {
        cursor: Cursor::default(),
        data: train_set.fingerprint(),
        lr: args.lr,
        epochs: args.epochs,
        batch: args.batch,
        grad_accum: args.grad_accum,
        seq_len: args.seq_len,
        seed: args.seed,
        warmup,
        total_steps,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        frozen: frozen.name().to_string(),
        history: Vec::new(),
    };
    let mut step = 0;
    if args.resume {
        let meta = trainer.load_checkpoint(&checkpoint_dir).context("cannot resume (run without --resume to start over)")?;
        let saved: RunState = serde_json::from_value(meta.extra).context("the checkpoint's run state")?;
        let same = RunState { cursor: saved.cursor, history: saved.history.clone(), ..state.clone() };
        if same != saved {
            bail!(
                "the checkpoint in {} was made with other data or settings (lr, epochs, batch, grad-accum, seq-len, seed, warmup, weight decay, clipping, --frozen must match); run without --resume to start over",
                checkpoint_dir.display()
            );
        }
        step = meta.step;
        state = saved;
        notes.push(format!("resuming at step {step} of {total_steps}"));
    }
    for note in notes {
        eprintln!("{note}");
    }
    let eval = eval_batches(&eval_set, args.batch);
    let accuracy_before = if args.exact_match && step == 0 { Some(exact_match(&llama, &tok, &eval_set)?) } else { None };
    if let Some((hit, n)) = accuracy_before {
        eprintln!("held-out exact match before training: {hit}/{n} ({:.1}%)", 100.0 * hit as f64 / n.max(1) as f64);
    }
    let before = if step == 0 { trainer.eval_loss(&eval) } else { None };
    if let Some(l) = before {
        eprintln!("held-out loss before training: {l:.4}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while saving is ignored; the checkpoint is written atomically anyway.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let bar = ProgressBar::new(total_steps as u64);
    bar.set_style(
        ProgressStyle::with_template("finetune {bar:30} {pos}/{len} steps  {msg}  eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(step as u64);
    let mut batches = train_set.batches(args.batch, args.seed, state.cursor);
    let (mut last_eval, mut smooth) = (state.history.iter().rev().find_map(|h| h.2).or(before), None::<f64>);
    let (run_start, mut run_tokens) = (Instant::now(), 0usize);
    let mut interrupted = false;
    while step < total_steps {
        let mut micro = Vec::with_capacity(args.grad_accum);
        for _ in 0..args.grad_accum {
            let Some(b) = batches.next() else { break };
            state.cursor = b.next;
            micro.push(flat(&b.examples));
        }
        let lr = cosine_lr(args.lr, step, warmup, total_steps);
        let max_norm = (args.max_grad_norm > 0.0).then_some(args.max_grad_norm);
        let stats = trainer.step(&micro, lr, max_norm, args.seed.wrapping_add(step as u64).wrapping_mul(0x9E37_79B9));
        step += 1;
        run_tokens += stats.tokens;
        smooth = Some(smooth.map_or(stats.loss, |s| 0.9 * s + 0.1 * stats.loss));
        let eval_now = step % eval_every == 0 || step == total_steps;
        let eval_loss = if eval_now { trainer.eval_loss(&eval) } else { None };
        if eval_loss.is_some() {
            last_eval = eval_loss;
        }
        state.history.push((step, stats.loss, eval_loss));
        let tps = run_tokens as f64 / run_start.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {:.4}  eval {}  {tps:.0} tok/s",
            smooth.unwrap_or(stats.loss),
            last_eval.map_or("-".to_string(), |l| format!("{l:.4}"))
        ));
        bar.set_position(step as u64);
        if eval_loss.is_some() && !std::io::stderr().is_terminal() {
            // No progress bar in a log: a line at each evaluation instead.
            eprintln!(
                "step {step}/{total_steps}: loss {:.4}, held-out {:.4}, {tps:.0} tokens/s, {:.0} s",
                smooth.unwrap_or(stats.loss),
                last_eval.unwrap_or(f64::NAN),
                run_start.elapsed().as_secs_f64()
            );
        }
        let halt = stop.load(Ordering::SeqCst) || args.max_steps.is_some_and(|m| step >= m);
        if step % steps_per_epoch == 0 || halt {
            trainer.save_checkpoint(&checkpoint_dir, step, serde_json::to_value(&state)?)?;
        }
        if halt && step < total_steps {
            interrupted = true;
            break;
        }
    }
    bar.finish_and_clear();
    let dims = ModelDims::from_config(&model.config);
    let base_name = args.model.model.as_ref().map_or("HuggingFaceTB/SmolLM2-135M-Instruct".to_string(), |p| p.display().to_string());
    let adapter = trainer.params.to_adapter();
    save_peft(&adapter, &dims, out, &base_name)?;
    let gguf_path = out.join("adapter.gguf");
    save_gguf(&adapter, &dims, &gguf_path)?;
    let secs = run_start.elapsed().as_secs_f64();
    if interrupted {
        eprintln!(
            "stopped at step {step} of {total_steps}: checkpoint in {}, continue with --resume; adapter so far in {}",
            checkpoint_dir.display(),
            out.display()
        );
        return Ok(());
    }
    let first = state.history.first().map(|h| h.1);
    let last = state.history.iter().rev().take(10).map(|h| h.1).sum::<f64>() / state.history.len().clamp(1, 10) as f64;
    println!(
        "trained {total_steps} steps ({} epochs of {} examples) in {:.0} s, {:.0} tokens/s; train loss {} -> {last:.4}; held-out loss {} -> {}",
        args.epochs,
        train_set.len(),
        secs,
        run_tokens as f64 / secs,
        first.map_or("-".into(), |l| format!("{l:.4}")),
        before.map_or("-".into(), |l| format!("{l:.4}")),
        last_eval.map_or("-".into(), |l| format!("{l:.4}"))
    );
    if args.exact_match {
        let mut llama = llama;
        llama.set_lora(Some(adapter.to_lora_set(1.0)))?;
        let (hit, n) = exact_match(&llama, &tok, &eval_set)?;
        let before = accuracy_before.map_or("-".to_string(), |(h, n)| format!("{h}/{n} ({:.1}%)", 100.0 * h as f64 / n.max(1) as f64));
        println!("held-out exact match of greedy answers: {before} -> {hit}/{n} ({:.1}%)", 100.0 * hit as f64 / n.max(1) as f64);
    }
    println!(
        "adapter: {} (PEFT: adapter_model.safetensors, adapter_config.json) and {}; use it with --lora {}",
        out.display(),
        gguf_path.display(),
        out.display()
    );
    Ok(())
}

/// Training steps on random tokens: one warm-up step, then `--steps` timed ones.
fn bench(args: &FinetuneArgs) -> Result<()> {
    if args.batch == 0 || args.seq_len < 2 || args.steps == 0 {
        bail!("--batch, --steps must be at least 1 and --seq-len at least 2");
    }
    let run = RunArgs { model: args.model.clone(), threads: args.threads, ctx: None, compute: Default::default(), lora: Default::default() };
    let (llama, _, _) = open_model(&run)?;
    let config = lora_config(args)?;
    let start = Instant::now();
    let frozen = frozen_format(args)?;
    let model = TrainModel::<f32>::from_llama_as(&llama, llama.n_threads(), frozen, kernels::Level::current())?;
    eprintln!("frozen weights ({}) ready in {:.1} s", frozen.name(), start.elapsed().as_secs_f64());
    drop(llama);
    let params = LoraParams::init(&config, &model.config, args.seed);
    let mut trainer = Trainer::new(&model, params, AdamW::default());
    let mut rng = train::rng::Rng::new(args.seed ^ 0x5eed);
    let n_vocab = model.config.n_vocab as u64;
    let mut batch = Batch::default();
    for _ in 0..args.batch {
        let start = batch.tokens.len();
        for _ in 0..args.seq_len {
            let t = (rng.next_u64() % n_vocab) as u32;
            batch.tokens.push(t);
            batch.labels.push(t as i64);
        }
        batch.seqs.push(start..start + args.seq_len);
    }
    let micro = [batch];
    trainer.step(&micro, args.lr, Some(1.0), args.seed);
    let start = Instant::now();
    let mut last = 0.0;
    for i in 0..args.steps {
        last = trainer.step(&micro, args.lr, Some(1.0), args.seed + 1 + i as u64).loss;
    }
    let secs = start.elapsed().as_secs_f64();
    let tokens = (args.batch * args.seq_len * args.steps) as f64;
    let tps = tokens / secs;
    let level = format!("{:?}", kernels::Level::current());
    if args.json {
        println!(
            "{}",
            serde_json::json!({"tokens_per_s": tps, "batch": args.batch, "seq_len": args.seq_len, "rank": args.rank, "targets": config.targets.len(),
                "threads": model.n_threads(), "steps": args.steps, "seconds": secs, "level": level, "loss": last, "frozen": frozen.name()})
        );
    } else {
        println!(
            "finetune bench: {tps:.1} tokens/s ({} steps of {} x {} tokens, rank {}, {} targets, {} threads, kernels {level}, frozen {}; {:.2} s per step)",
            args.steps,
            args.batch,
            args.seq_len,
            args.rank,
            config.targets.len(),
            model.n_threads(),
            frozen.name(),
            secs / args.steps as f64
        );
    }
    Ok(())
}
