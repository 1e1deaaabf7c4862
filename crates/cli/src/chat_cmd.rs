//! `ferrolm chat`: an interactive conversation with the model's chat template and history.

use crate::args::{RunArgs, SamplingArgs};
use crate::generate_cmd::{self, logprobs_table, open_checked, report, report_speculation};
use anyhow::{Context, Result};
use generate::chat::{ChatMessage, ChatTemplate};
use generate::Session;
use std::io::{BufRead, Write};

pub(crate) fn cmd_chat(run: &RunArgs, sampling: &SamplingArgs, system: Option<String>) -> Result<()> {
    let options = sampling.options()?;
    let (model, tok, n_ctx) = open_checked(run, &options)?;
    let source = model.file().get("tokenizer.chat_template").and_then(|v| v.as_str());
    let (template, note) = ChatTemplate::for_model(source, &model.config.architecture).context("the model's chat template does not compile")?;
    if let Some(note) = note {
        eprintln!("ferrolm: {note}");
    }
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
        if !gen.logprobs.is_empty() {
            eprint!("{}", logprobs_table(&tok, &gen.logprobs));
        }
        report(&gen);
        if sampling.verbose && options.speculative.is_some() {
            report_speculation(&gen);
        }
        messages.push(ChatMessage { role: "assistant".into(), content: gen.text.trim().to_string() });
    }
    Ok(())
}
