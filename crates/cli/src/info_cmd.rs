//! `ferrolm info`: describes a model file (metadata, shapes, tensor types, tokenizer).

use crate::args::ModelArgs;
use crate::load::open_file;
use anyhow::Result;
use model::tokenizer_gguf::tokenizer_from_gguf;

pub(crate) fn cmd_info(args: &ModelArgs) -> Result<()> {
    let (path, file) = open_file(args)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if path.is_dir() {
        println!("file:          {} (a Hugging Face checkpoint folder, read as a GGUF in memory)", path.display());
    } else {
        println!("file:          {} ({:.1} MB, GGUF v{})", path.display(), size as f64 / 1e6, file.version);
    }
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
