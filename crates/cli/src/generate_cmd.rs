//! `ferrolm generate`: one prompt (streamed), `n` completions of one prompt, beam search, or a
//! file of prompts decoded together; text or JSON lines out.

use crate::args::{RunArgs, SamplingArgs};
use crate::load::open_model;
use anyhow::{bail, Context, Result};
use generate::beam::{BeamConfig, EarlyStopping, FinishReason, LengthPenalty};
use generate::beam_search;
use generate::sampler::Logprobs;
use generate::{generate_batch, generate_n, BatchSizes, GenerateError, GenerateOptions, Generation, Session, StopReason};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;
use tokenizer::Tokenizer;

/// Prompt tokens evaluated per forward call.
const PREFILL_CHUNK: usize = 256;

/// What `generate` was asked for, besides the sampling settings.
pub struct GenerateRequest<'a> {
    pub prompt: Option<&'a str>,
    pub parse_special: bool,
    pub batch_file: Option<&'a Path>,
    pub max_batch: usize,
    pub num_return_sequences: usize,
    pub beams: Option<BeamArgs>,
    pub json: bool,
}

/// Beam-search settings from the command line.
pub struct BeamArgs {
    pub num_beams: usize,
    pub length_penalty: f64,
    pub gnmt_alpha: Option<f64>,
    pub early_stopping: String,
}

pub fn cmd_generate(run: &RunArgs, sampling: &SamplingArgs, req: &GenerateRequest) -> Result<()> {
    let options = sampling.options()?;
    if req.num_return_sequences == 0 || req.num_return_sequences > 256 {
        bail!("--num-return-sequences must be between 1 and 256, got {}", req.num_return_sequences);
    }
    if req.max_batch == 0 || req.max_batch > 256 {
        bail!("--max-batch must be between 1 and 256, got {}", req.max_batch);
    }
    if let Some(path) = req.batch_file {
        if req.num_return_sequences > 1 {
            bail!("--num-return-sequences applies to a single --prompt, not to --batch-file");
        }
        if options.speculative.is_some() {
            bail!("--speculative applies to a single --prompt, not to --batch-file");
        }
        // Read and check every line before loading the model: a bad line costs nothing.
        let lines = read_batch_file(path, &options)?;
        let (model, tok, n_ctx) = open_checked(run, &options)?;
        return run_batch_file(&model, &tok, n_ctx, lines, req, sampling.verbose);
    }
    let Some(prompt) = req.prompt else { bail!("give a --prompt or a --batch-file") };
    if let Some(b) = &req.beams {
        // Sampling flags, --logprobs and --speculative conflict with --num-beams (see args.rs).
        if b.num_beams == 0 || b.num_beams > 64 {
            bail!("--num-beams must be between 1 and 64, got {}", b.num_beams);
        }
        if req.num_return_sequences > b.num_beams {
            bail!("--num-return-sequences ({}) cannot exceed --num-beams ({})", req.num_return_sequences, b.num_beams);
        }
        let (model, tok, n_ctx) = open_model(run)?;
        let ids = tok.encode_with_special(prompt, req.parse_special);
        return run_beams(&model, &tok, n_ctx, &ids, &options, req, b);
    }
    let (model, tok, n_ctx) = open_checked(run, &options)?;
    let ids = tok.encode_with_special(prompt, req.parse_special);
    if req.num_return_sequences > 1 {
        if options.speculative.is_some() {
            bail!("--speculative makes one sequence: drop it or --num-return-sequences");
        }
        let sizes = BatchSizes { n_ctx, prefill_chunk: PREFILL_CHUNK };
        let gens = generate_n(&model, &tok, &ids, &options, req.num_return_sequences, sizes, &mut |_, _| true)?;
        return print_all(&tok, &gens, req.json);
    }
    let draft = open_draft(run, sampling, &model)?;
    let mut session = match &draft {
        Some(d) => Session::with_draft_model(&model, d, n_ctx, PREFILL_CHUNK)?,
        None => Session::new(&model, n_ctx, PREFILL_CHUNK)?,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stream = !req.json;
    let gen = session.generate(&tok, &ids, &options, &mut |text| !stream || out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok())?;
    drop(out);
    if req.json {
        print_all(&tok, std::slice::from_ref(&gen), true)?;
    } else {
        // A closed stdout (`| head`) is an error here, not a panic: main exits quietly on it.
        writeln!(std::io::stdout())?;
        if !gen.logprobs.is_empty() {
            eprint!("{}", logprobs_table(&tok, &gen.logprobs));
        }
    }
    report(&gen);
    if sampling.verbose && options.speculative.is_some() {
        report_speculation(&gen);
    }
    Ok(())
}

/// The model, tokenizer and context size of `run`, after checking that every `--logit-bias`
/// token is in the model's vocabulary (the sampler would skip one that is not).
pub(crate) fn open_checked(run: &RunArgs, options: &GenerateOptions) -> Result<(model::Llama, Tokenizer, usize)> {
    let (model, tok, n_ctx) = open_model(run)?;
    check_logit_bias(options, model.config.n_vocab)?;
    Ok((model, tok, n_ctx))
}

fn check_logit_bias(options: &GenerateOptions, n_vocab: usize) -> Result<()> {
    if let Some((token, _)) = options.sampler.logit_bias.iter().find(|(token, _)| *token as usize >= n_vocab) {
        bail!(
            "--logit-bias token {token} is outside the model's vocabulary of {n_vocab} tokens (ids 0 to {}): use an id that `ferrolm tokenize` prints",
            n_vocab.saturating_sub(1)
        );
    }
    Ok(())
}

/// The `--verbose` line about speculative decoding: drafts made and accepted.
pub(crate) fn report_speculation(gen: &Generation) {
    let rate = if gen.drafted > 0 { 100.0 * gen.accepted as f64 / gen.drafted as f64 } else { 0.0 };
    // Each verification call emits its accepted drafts plus one token; a plain step emits one.
    let calls = gen.tokens.len().saturating_sub(1).saturating_sub(gen.accepted);
    let per_call = if calls > 0 { gen.tokens.len().saturating_sub(1) as f64 / calls as f64 } else { 1.0 };
    eprintln!(
        "[speculative: {} drafted, {} accepted ({rate:.0}%) in {} verification calls, {} steps not drafted (backing off after rejections) | {per_call:.2} tokens per target forward (the most speed-up the drafts can give)]",
        gen.drafted, gen.accepted, gen.verify_calls, gen.backoff_steps
    );
}

/// The draft model of `--speculative draft`: another file (same vocabulary) or the model's own
/// first layers, on the model's threads.
pub(crate) fn open_draft(run: &RunArgs, sampling: &SamplingArgs, model: &model::Llama) -> Result<Option<model::Llama>> {
    if sampling.speculative.as_deref() != Some("draft") {
        return Ok(None);
    }
    let (path, layers) = match (&sampling.draft_model, sampling.draft_layers) {
        (Some(p), _) => (p.clone(), None),
        (None, Some(n)) => (crate::fetch::resolve_model(run.model.model.as_deref())?, Some(n)),
        (None, None) => bail!("--speculative draft needs --draft-model PATH or --draft-layers N"),
    };
    let file = gguf::GgufFile::open(&path)?;
    let draft = model::Llama::sharing_threads(file, model, layers).with_context(|| format!("cannot load the draft model from {}", path.display()))?;
    Ok(Some(draft))
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

fn run_beams(
    model: &model::Llama,
    tok: &Tokenizer,
    n_ctx: usize,
    ids: &[u32],
    options: &GenerateOptions,
    req: &GenerateRequest,
    b: &BeamArgs,
) -> Result<()> {
    let length_penalty = match b.gnmt_alpha {
        Some(a) => LengthPenalty::Gnmt(a),
        None => LengthPenalty::Hf(b.length_penalty),
    };
    let early_stopping = match b.early_stopping.as_str() {
        "true" => EarlyStopping::True,
        "never" => EarlyStopping::Never,
        _ => EarlyStopping::False,
    };
    let config = BeamConfig {
        num_beams: b.num_beams,
        length_penalty,
        early_stopping,
        num_return_sequences: req.num_return_sequences,
        max_new_tokens: options.max_tokens,
        eos: if options.ignore_eos { Vec::new() } else { tok.end_of_generation_ids().to_vec() },
    };
    let started = Instant::now();
    let results = beam_search(model, tok, ids, &config, &options.stop, n_ctx, PREFILL_CHUNK)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, r) in results.iter().enumerate() {
        let finish = match r.finish {
            FinishReason::Eos => "eos",
            FinishReason::StopString => "stop",
            FinishReason::MaxTokens => "length",
            FinishReason::Interrupted => "interrupted",
        };
        if req.json {
            writeln!(
                out,
                "{}",
                json!({"index": i, "text": r.text, "tokens": r.tokens, "score": r.score, "sum_logprobs": r.sum_logprobs, "stop_reason": finish})
            )?;
        } else {
            writeln!(
                out,
                "=== beam {} of {} (score {:.4}, sum of log-probs {:.4}, {} tokens, stop: {finish}) ===",
                i + 1,
                results.len(),
                r.score,
                r.sum_logprobs,
                r.tokens.len()
            )?;
            writeln!(out, "{}", r.text)?;
        }
    }
    out.flush()?;
    eprintln!("[beam search: {} beams, {} prompt tokens, {:.2} s]", b.num_beams, ids.len(), started.elapsed().as_secs_f64());
    Ok(())
}

fn stop_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::EndOfGeneration => "eos",
        StopReason::StopString => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ContextFull => "context_full",
        StopReason::Cancelled => "cancelled",
    }
}

fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false)
}

fn logprobs_json(tok: &Tokenizer, lps: &[Logprobs]) -> Value {
    let alt = |(id, lp): &(u32, f32)| json!({"token": id, "text": token_text(tok, *id), "logprob": lp});
    Value::Array(
        lps.iter()
            .map(|l| json!({"token": l.token, "text": token_text(tok, l.token), "logprob": l.logprob, "top": l.top.iter().map(alt).collect::<Vec<_>>()}))
            .collect(),
    )
}

pub(crate) fn logprobs_table(tok: &Tokenizer, lps: &[Logprobs]) -> String {
    let mut s = String::from("[logprobs]\n");
    for l in lps {
        let top: Vec<String> = l.top.iter().map(|(id, lp)| format!("{:?} {lp:.3}", token_text(tok, *id))).collect();
        s.push_str(&format!("  {:<16} {:>8.3}   {}\n", format!("{:?}", token_text(tok, l.token)), l.logprob, top.join(", ")));
    }
    s
}

/// A generation as one JSON object.
fn gen_json(tok: &Tokenizer, g: &Generation) -> Value {
    let mut v = json!({"text": g.text, "tokens": g.tokens, "stop_reason": stop_reason(g.stop_reason)});
    if !g.logprobs.is_empty() {
        v["logprobs"] = logprobs_json(tok, &g.logprobs);
    }
    v
}

fn print_all(tok: &Tokenizer, gens: &[Generation], json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, g) in gens.iter().enumerate() {
        if json {
            let mut v = gen_json(tok, g);
            v["index"] = json!(i);
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "=== sequence {} of {} ({} tokens, stop: {}) ===", i + 1, gens.len(), g.tokens.len(), stop_reason(g.stop_reason))?;
            writeln!(out, "{}", g.text)?;
            if !g.logprobs.is_empty() {
                write!(out, "{}", logprobs_table(tok, &g.logprobs))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// One line of a batch file.
struct BatchLine {
    /// `FILE:LINE`, for error messages.
    at: String,
    prompt: String,
    options: GenerateOptions,
    id: Option<Value>,
}

/// Reads JSON lines `{"prompt": "...", "max_tokens"?, "temperature"?, "seed"?, "stop"?, "id"?}`;
/// fields not given take the command-line settings. Errors name the file and line.
fn read_batch_file(path: &Path, defaults: &GenerateOptions) -> Result<Vec<BatchLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let line = line.with_context(|| format!("{}: cannot read the line", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).with_context(|| format!("{}: not valid JSON", at()))?;
        let Some(obj) = v.as_object() else { bail!("{}: expected a JSON object like {{\"prompt\": \"...\"}}", at()) };
        let Some(prompt) = obj.get("prompt").and_then(|p| p.as_str()) else { bail!("{}: expected a string field \"prompt\"", at()) };
        if let Some(bad) = obj.keys().find(|k| !["prompt", "max_tokens", "temperature", "seed", "stop", "id"].contains(&k.as_str())) {
            bail!("{}: unknown field {bad:?} (known: prompt, max_tokens, temperature, seed, stop, id)", at());
        }
        let mut options = defaults.clone();
        if let Some(m) = obj.get("max_tokens") {
            options.max_tokens = m.as_u64().with_context(|| format!("{}: \"max_tokens\" must be a non-negative integer", at()))? as usize;
        }
        if let Some(t) = obj.get("temperature") {
            options.sampler.temperature = t.as_f64().with_context(|| format!("{}: \"temperature\" must be a number", at()))? as f32;
        }
        if let Some(s) = obj.get("seed") {
            options.sampler.seed = s.as_u64().with_context(|| format!("{}: \"seed\" must be a non-negative integer", at()))?;
        }
        if let Some(s) = obj.get("stop") {
            let list = match s {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| format!("{}: \"stop\" must be strings", at()))?,
                _ => bail!("{}: \"stop\" must be a string or a list of strings", at()),
            };
            options.stop = list;
        }
        options.sampler.validate().with_context(at)?;
        lines.push(BatchLine { at: at(), prompt: prompt.to_string(), options, id: obj.get("id").cloned() });
    }
    if lines.is_empty() {
        bail!("{}: no prompts in the file", path.display());
    }
    Ok(lines)
}

fn run_batch_file(model: &model::Llama, tok: &Tokenizer, n_ctx: usize, lines: Vec<BatchLine>, req: &GenerateRequest, verbose: bool) -> Result<()> {
    let requests: Vec<(Vec<u32>, GenerateOptions)> =
        lines.iter().map(|l| (tok.encode_with_special(&l.prompt, req.parse_special), l.options.clone())).collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut generated, mut prefill, mut busy) = (0, std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut failed = 0;
    // One at a time, a plain session (the fastest path for a single sequence), made once.
    let mut session = if req.max_batch == 1 { Some(Session::new(model, n_ctx, PREFILL_CHUNK)?) } else { None };
    // Static batches of up to max_batch sequences; results in input order.
    for (b, group) in requests.chunks(req.max_batch).enumerate() {
        let sizes = BatchSizes { n_ctx, prefill_chunk: PREFILL_CHUNK };
        let started = Instant::now();
        let results = generate_group(model, tok, group, sizes, session.as_mut());
        busy += started.elapsed();
        for (k, result) in results.into_iter().enumerate() {
            let i = b * req.max_batch + k;
            let g = match result {
                Ok(g) => g,
                Err(err) => {
                    failed += 1;
                    let err = format!("{:#}", anyhow::Error::new(err));
                    if req.json {
                        let mut v = json!({"index": i, "error": err});
                        if let Some(id) = &lines[i].id {
                            v["id"] = id.clone();
                        }
                        writeln!(out, "{v}")?;
                    } else {
                        // The results so far first, so that the error line falls in its place.
                        out.flush()?;
                        eprintln!("error: prompt {} of {} ({}): {err}", i + 1, lines.len(), lines[i].at);
                    }
                    continue;
                }
            };
            generated += g.tokens.len();
            prefill += g.prefill_time;
            if req.json {
                let mut v = gen_json(tok, &g);
                v["index"] = json!(i);
                if let Some(id) = &lines[i].id {
                    v["id"] = id.clone();
                }
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "=== prompt {} of {} ({} tokens, stop: {}) ===", i + 1, lines.len(), g.tokens.len(), stop_reason(g.stop_reason))?;
                writeln!(out, "{}", g.text)?;
                if !g.logprobs.is_empty() {
                    write!(out, "{}", logprobs_table(tok, &g.logprobs))?;
                }
            }
        }
    }
    out.flush()?;
    let total = busy.as_secs_f64();
    let decode = (total - prefill.as_secs_f64()).max(1e-9);
    eprintln!(
        "[batch: {} prompts, at most {} together | generated {generated} tokens in {total:.2} s, {:.1} tok/s overall, {:.1} tok/s after the prompts]",
        lines.len(),
        req.max_batch,
        generated as f64 / total,
        generated as f64 / decode,
    );
    if verbose {
        eprintln!("[prompt evaluation took {:.2} s of it]", prefill.as_secs_f64());
    }
    if failed > 0 {
        bail!("{failed} of {} prompts failed (see their error lines); the others ran", lines.len());
    }
    Ok(())
}

/// Generates one group of a batch file: together, or, when that fails, each prompt alone, so
/// that a bad prompt (empty, longer than the context) costs only its own result. A prompt gives
/// the same tokens alone as in a batch.
fn generate_group(
    model: &model::Llama,
    tok: &Tokenizer,
    group: &[(Vec<u32>, GenerateOptions)],
    sizes: BatchSizes,
    session: Option<&mut Session>,
) -> Vec<Result<Generation, GenerateError>> {
    if let Some(session) = session {
        return group
            .iter()
            .map(|(prompt, options)| {
                session.clear();
                session.generate(tok, prompt, options, &mut |_| true)
            })
            .collect();
    }
    match generate_batch(model, tok, group, sizes, &mut |_, _| true) {
        Ok(gens) => gens.into_iter().map(Ok).collect(),
        Err(err) if group.len() == 1 => vec![Err(err)],
        Err(_) => {
            group.iter().map(|r| generate_batch(model, tok, std::slice::from_ref(r), sizes, &mut |_, _| true).map(|mut g| g.remove(0))).collect()
        }
    }
}
