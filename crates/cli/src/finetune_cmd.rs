//! `ferrolm finetune`: train a LoRA adapter on the frozen model; `--bench` times training steps.

use crate::args::{ModelArgs, RunArgs};
use crate::load::open_model;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use train::optim::AdamW;
use train::trainer::Trainer;
use train::{Batch, LoraConfig, LoraParams, Target, TrainModel};

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
    bail!("ferrolm finetune: training from a data file is not built yet; --bench times training steps")
}

/// Training steps on random tokens: one warm-up step, then `--steps` timed ones.
fn bench(args: &FinetuneArgs) -> Result<()> {
    if args.batch == 0 || args.seq_len < 2 || args.steps == 0 {
        bail!("--batch, --steps must be at least 1 and --seq-len at least 2");
    }
    let run = RunArgs { model: args.model.clone(), threads: args.threads, ctx: None, order: Default::default() };
    let (llama, _, _) = open_model(&run)?;
    let config = lora_config(args)?;
    let start = Instant::now();
    let model = TrainModel::<f32>::from_llama(&llama, llama.n_threads())?;
    eprintln!("frozen weights ready in {:.1} s", start.elapsed().as_secs_f64());
    drop(llama);
    let params = LoraParams::init(&config, &model.config, args.seed);
    let mut trainer = Trainer::new(&model, params, AdamW::default());
    let mut rng = train::rng::Rng::new(args.seed ^ 0x5eed);
    let n_vocab = model.config.n_vocab as u64;
    let mut batch = Batch::default();
    for s in 0..args.batch {
        let start = batch.tokens.len();
        for _ in 0..args.seq_len {
            let t = (rng.next_u64() % n_vocab) as u32;
            batch.tokens.push(t);
            batch.labels.push(t as i64);
        }
        batch.seqs.push(start..start + args.seq_len);
        let _ = s;
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
                "threads": model.n_threads(), "steps": args.steps, "seconds": secs, "level": level, "loss": last})
        );
    } else {
        println!(
            "finetune bench: {tps:.1} tokens/s ({} steps of {} x {} tokens, rank {}, {} targets, {} threads, kernels {level}; {:.2} s per step)",
            args.steps,
            args.batch,
            args.seq_len,
            args.rank,
            config.targets.len(),
            model.n_threads(),
            secs / args.steps as f64
        );
    }
    Ok(())
}
