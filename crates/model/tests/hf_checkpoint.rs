//! Hugging Face checkpoint folders: a tiny Llama written both as a GGUF and as a checkpoint in
//! Hugging Face's layout (rotate-half Q/K rows, its tensor names, a tokenizer.json) gives the
//! same logits and the same tokens; what the loader does not run is an error.

use gguf::GgufFile;
use kernels::Format;
use model::hf::{gguf_from_checkpoint, is_checkpoint_dir};
use model::testing::{tiny_llama_gguf, tiny_vocab, TinySpec, CONTROL_TOKENS};
use model::{Llama, Logits};
use safetensors_file::{serialize, Dtype};
use serde_json::json;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolm-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The f32 values of a tensor of the tiny GGUF, rows of `cols`.
fn values(file: &GgufFile, name: &str) -> (Vec<f32>, Vec<u64>) {
    let info = file.tensor(name).unwrap();
    let bytes = file.tensor_data(info);
    (bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), info.dims.iter().rev().copied().collect())
}

/// GGUF rows (adjacent RoPE pairs) back to Hugging Face's rotate-half order: HF row j*Dh/2 + i of
/// a head is GGUF row 2i + j.
fn unpermute(w: &[f32], shape: &[u64], heads: usize) -> Vec<f32> {
    let (rows, cols) = (shape[0] as usize, shape[1] as usize);
    let dh = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..dh / 2 {
            for j in 0..2 {
                let (hf, gg) = (h * dh + j * dh / 2 + i, h * dh + 2 * i + j);
                out[hf * cols..(hf + 1) * cols].copy_from_slice(&w[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    out
}

/// Writes the tiny model of `spec` (F32) as a Hugging Face checkpoint in `dir`; `config` edits
/// config.json before it is written.
fn write_checkpoint(dir: &Path, spec: &TinySpec, config_edit: impl FnOnce(&mut serde_json::Value)) -> GgufFile {
    let file = GgufFile::from_bytes(tiny_llama_gguf(spec)).unwrap();
    let dh = spec.n_embd / spec.n_head;
    let mut tensors: Vec<(String, Vec<u64>, Vec<u8>)> = Vec::new();
    let mut add = |hf: String, gg: &str, heads: Option<usize>| {
        let (w, shape) = values(&file, gg);
        let w = heads.map_or(w.clone(), |h| unpermute(&w, &shape, h));
        tensors.push((hf, shape, w.iter().flat_map(|v| v.to_le_bytes()).collect()));
    };
    add("model.embed_tokens.weight".into(), "token_embd.weight", None);
    for l in 0..spec.n_layer {
        let hf = |s: &str| format!("model.layers.{l}.{s}.weight");
        let gg = |s: &str| format!("blk.{l}.{s}.weight");
        add(hf("input_layernorm"), &gg("attn_norm"), None);
        add(hf("self_attn.q_proj"), &gg("attn_q"), Some(spec.n_head));
        add(hf("self_attn.k_proj"), &gg("attn_k"), Some(spec.n_head_kv));
        add(hf("self_attn.v_proj"), &gg("attn_v"), None);
        add(hf("self_attn.o_proj"), &gg("attn_output"), None);
        add(hf("post_attention_layernorm"), &gg("ffn_norm"), None);
        add(hf("mlp.gate_proj"), &gg("ffn_gate"), None);
        add(hf("mlp.up_proj"), &gg("ffn_up"), None);
        add(hf("mlp.down_proj"), &gg("ffn_down"), None);
    }
    add("model.norm.weight".into(), "output_norm.weight", None);
    let refs: Vec<(&str, Dtype, &[u64], &[u8])> = tensors.iter().map(|(n, s, b)| (n.as_str(), Dtype::F32, s.as_slice(), b.as_slice())).collect();
    std::fs::write(dir.join("model.safetensors"), serialize(&refs, &[]).unwrap()).unwrap();
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": spec.n_embd, "intermediate_size": spec.n_ff,
        "num_hidden_layers": spec.n_layer, "num_attention_heads": spec.n_head, "num_key_value_heads": spec.n_head_kv, "head_dim": dh,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": true,
        "vocab_size": tiny_vocab().0.len(), "bos_token_id": 1, "eos_token_id": 2, "attention_bias": false, "mlp_bias": false
    });
    config_edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (tokens, _, merges) = tiny_vocab();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<serde_json::Value> = CONTROL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}))
        .collect();
    let tokenizer = json!({
        "version": "1.0", "normalizer": null, "added_tokens": added,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": false},
        "decoder": {"type": "ByteLevel"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), json!({"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}).to_string())
        .unwrap();
    file
}

#[test]
fn a_checkpoint_gives_the_logits_and_tokens_of_the_same_gguf() {
    let spec = TinySpec { matrix_format: Format::F32, embd_format: Format::F32, ..TinySpec::default() };
    let dir = temp_dir("same");
    let gguf = write_checkpoint(&dir, &spec, |_| {});
    assert!(is_checkpoint_dir(&dir));
    let converted = gguf_from_checkpoint(&dir).unwrap();
    // The tokenizer: the same ids for text with digits, bytes and a control token.
    let a = model::tokenizer_gguf::tokenizer_from_gguf(&gguf).unwrap();
    let b = model::tokenizer_gguf::tokenizer_from_gguf(&converted).unwrap();
    let text = "<|im_start|>Hello 2024, naïve café!\n  x";
    assert_eq!(a.encode(text, true), b.encode(text, true));
    assert!(converted.get("tokenizer.chat_template").is_some());
    // The model: bit-identical logits (the same f32 weights and the same RoPE pairs).
    let tokens: Vec<u32> = vec![1, 40, 77, 200, 5, 263, 3, 99, 150];
    let run = |file: GgufFile| {
        let model = Llama::from_file(file, 2).unwrap();
        let mut cache = model.new_cache(32).unwrap();
        let mut scratch = model.new_scratch(16, 32).unwrap();
        model.forward(&tokens, &mut cache, &mut scratch, Logits::All).unwrap().to_vec()
    };
    assert_eq!(run(gguf), run(converted));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_the_loader_does_not_run_is_an_error() {
    let spec = TinySpec { matrix_format: Format::F32, embd_format: Format::F32, ..TinySpec::default() };
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: [(&str, Edit, &str); 4] = [
        ("bias", Box::new(|c| c["attention_bias"] = json!(true)), "attention biases"),
        ("arch", Box::new(|c| c["architectures"] = json!(["Qwen2ForCausalLM"])), "Qwen2ForCausalLM"),
        ("rope", Box::new(|c| c["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0})), "RoPE scaling"),
        ("act", Box::new(|c| c["hidden_act"] = json!("gelu")), "activation"),
    ];
    for (name, edit, message) in cases {
        let dir = temp_dir(name);
        write_checkpoint(&dir, &spec, edit);
        let err = gguf_from_checkpoint(&dir).err().unwrap_or_else(|| panic!("{name}: loaded"));
        assert!(err.to_string().contains(message), "{name}: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A tensor the Llama block does not read.
    let dir = temp_dir("extra");
    write_checkpoint(&dir, &spec, |_| {});
    let st = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors_file::SafeTensors::from_bytes(st).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<u64>, Vec<u8>)> =
        file.tensors().iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), file.bytes(&t.name).unwrap().to_vec())).collect();
    tensors.push(("model.layers.0.self_attn.q_proj.bias".into(), Dtype::F32, vec![4], vec![0; 16]));
    let refs: Vec<(&str, Dtype, &[u64], &[u8])> = tensors.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())).collect();
    std::fs::write(dir.join("model.safetensors"), serialize(&refs, &[]).unwrap()).unwrap();
    let Err(err) = gguf_from_checkpoint(&dir) else { panic!("a checkpoint with an extra tensor loads") };
    assert!(err.to_string().contains("q_proj.bias"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
