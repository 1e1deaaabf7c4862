//! `ferrolm`: the command line over the ferrolm crates.

mod args;
mod bench;
mod chat_cmd;
mod embed_cmd;
mod fetch;
mod finetune_cmd;
mod generate_cmd;
mod index_cmd;
mod info_cmd;
mod load;
mod merge_cmd;
mod perplexity_cmd;
mod quantize_cmd;
mod serve_cmd;
mod similarity_cmd;
mod tokenize_cmd;
mod tokenizer_bench;
mod vectors_io;

use anyhow::{bail, Result};
use args::{Cli, Command, RunArgs};
use clap::{CommandFactory, FromArgMatches};
use load::{open_model, open_tokenizer};

fn main() {
    let matches = Cli::command().get_matches();
    if let Err(err) = args::check_flag_combinations(&matches) {
        err.exit();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
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
        Command::Chat { run, sampling, system } => chat_cmd::cmd_chat(&run, &sampling, system),
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
        Command::Info { model } => info_cmd::cmd_info(&model),
        Command::Embed(args) => embed_cmd::cmd_embed(&args),
        Command::Similarity(args) => similarity_cmd::cmd_similarity(&args),
        Command::Index(command) => index_cmd::cmd_index(&command),
        Command::Finetune(args) => finetune_cmd::cmd_finetune(&args),
        Command::Merge(args) => merge_cmd::cmd_merge(&args),
        Command::Quantize(args) => quantize_cmd::cmd_quantize(&args),
        Command::Perplexity { model, threads, file, ctx, chunks, json, compute, lora } => {
            perplexity_cmd::cmd_perplexity(&RunArgs { model, threads, ctx: None, compute, lora }, &file, ctx, chunks, json)
        }
        Command::TokenizerBench { model, file, reps, json, pathological } => {
            let (_, tok) = open_tokenizer(&model)?;
            let name = fetch::resolve_model(model.model.as_deref())?;
            let name = name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            tokenizer_bench::run(&tok, &tokenizer_bench::TokenizerBenchArgs { file, reps, json, pathological }, &name)
        }
        Command::Bench { model, n_prompt, n_gen, depth, threads, reps, batch, json, compute } => {
            if batch == 0 || batch > 256 {
                bail!("--batch must be between 1 and 256, got {batch}");
            }
            let run = RunArgs { model: model.clone(), threads, ctx: None, compute, lora: Default::default() };
            let (llama, _, _) = open_model(&run)?;
            let name = fetch::resolve_model(model.model.as_deref())?;
            let name = name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            bench::run(&llama, &bench::BenchArgs { n_prompt, n_gen, depth, batch, reps, json }, &name)
        }
    }
}
