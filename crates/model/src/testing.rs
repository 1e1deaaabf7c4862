//! Tiny Llama models with random weights, written as real GGUF files, for tests that must not
//! depend on a download. The tokenizer is byte-level BPE over all 256 bytes plus a few merges and
//! the ChatML control tokens, so every string encodes.

use crate::llama::ggml_type_of;
use gguf::{GgmlType, GgufWriter, Value, ValueType};
use kernels::quant::quantize_row;
use kernels::Format;
use tokenizer::byte_level::byte_to_char;

/// Sizes of a tiny test model.
#[derive(Clone, Debug)]
pub struct TinySpec {
    /// L.
    pub n_layer: usize,
    /// D.
    pub n_embd: usize,
    /// H.
    pub n_head: usize,
    /// Hkv.
    pub n_head_kv: usize,
    /// F.
    pub n_ff: usize,
    /// Format of the block matrices.
    pub matrix_format: Format,
    /// Format of the embedding table (also the tied output head).
    pub embd_format: Format,
    /// Seed of the weights.
    pub seed: u64,
    /// A Gemma 3 model (its keys, per-head and post norms, sliding-window layers) instead of Llama.
    pub gemma: bool,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 96,
            matrix_format: Format::Q4_1,
            embd_format: Format::Q8_0,
            seed: 1,
            gemma: false,
        }
    }
}

/// The sliding window of the tiny Gemma models: short, so that a few tokens reach past it.
pub const TINY_WINDOW: usize = 6;

/// The control tokens at ids 0, 1, 2 (as in SmolLM2).
pub const CONTROL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn matrix(rng: &mut Lcg, format: Format, rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let rb = format.row_bytes(cols).unwrap_or(0);
    let mut out = vec![0u8; rows * rb];
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        row.iter_mut().for_each(|v| *v = rng.next() * scale);
        quantize_row(format, &row, &mut out[r * rb..(r + 1) * rb]);
    }
    out
}

/// The tiny vocabulary: control tokens, the 256 byte tokens, then one token per merge.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = CONTROL_TOKENS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3i32; CONTROL_TOKENS.len()];
    for b in 0..=255u8 {
        tokens.push(byte_to_char(b).to_string());
        types.push(1);
    }
    let g = byte_to_char(b' ');
    let merges: Vec<String> = vec![format!("{g} t"), "h e".into(), format!("{g}t he"), "i n".into(), format!("{g} a"), "e r".into()];
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types, merges)
}

/// Writes a tiny Llama GGUF (architecture, tokenizer, chat template and random weights) to bytes.
pub fn tiny_llama_gguf(spec: &TinySpec) -> Vec<u8> {
    let (tokens, types, merges) = tiny_vocab();
    let (d, f, l) = (spec.n_embd, spec.n_ff, spec.n_layer);
    let dh = d / spec.n_head;
    let kv = spec.n_head_kv * dh;
    let v = tokens.len();
    let mut w = GgufWriter::new();
    let u32v = |x: usize| Value::U32(x as u32);
    let strings = |xs: &[String]| Value::Array(ValueType::String, xs.iter().map(|s| Value::String(s.clone())).collect());
    let arch = if spec.gemma { "gemma3" } else { "llama" };
    let key = |k: &str| format!("{arch}.{k}");
    w.add_kv("general.architecture", Value::String(arch.into()))
        .add_kv("general.name", Value::String(format!("tiny-test-{arch}")))
        .add_kv(&key("block_count"), u32v(l))
        .add_kv(&key("context_length"), u32v(256))
        .add_kv(&key("embedding_length"), u32v(d))
        .add_kv(&key("feed_forward_length"), u32v(f))
        .add_kv(&key("attention.head_count"), u32v(spec.n_head))
        .add_kv(&key("attention.head_count_kv"), u32v(spec.n_head_kv))
        .add_kv(&key("rope.freq_base"), Value::F32(if spec.gemma { 1e6 } else { 10000.0 }))
        .add_kv(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    if spec.gemma {
        w.add_kv(&key("attention.key_length"), u32v(dh))
            .add_kv(&key("attention.value_length"), u32v(dh))
            .add_kv(&key("attention.sliding_window"), u32v(TINY_WINDOW));
    }
    w.add_kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .add_kv("tokenizer.ggml.pre", Value::String("smollm".into()))
        .add_kv("tokenizer.ggml.tokens", strings(&tokens))
        .add_kv("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types.iter().map(|&t| Value::I32(t)).collect()))
        .add_kv("tokenizer.ggml.merges", strings(&merges))
        .add_kv("tokenizer.ggml.bos_token_id", u32v(1))
        .add_kv("tokenizer.ggml.eos_token_id", u32v(2))
        .add_kv("tokenizer.ggml.unknown_token_id", u32v(0))
        .add_kv("tokenizer.ggml.padding_token_id", u32v(2))
        .add_kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .add_kv(
            "tokenizer.chat_template",
            Value::String(
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
                    .into(),
            ),
        );
    let mut rng = Lcg(spec.seed);
    let norm = |rng: &mut Lcg, n: usize| -> Vec<u8> { (0..n).flat_map(|_| (1.0 + 0.1 * rng.next()).to_le_bytes()).collect() };
    let mf = spec.matrix_format;
    w.add_tensor("token_embd.weight", &[d as u64, v as u64], ggml_type_of(spec.embd_format), matrix(&mut rng, spec.embd_format, v, d, 1.0));
    for i in 0..l {
        let n = |s: &str| format!("blk.{i}.{s}");
        let sc = 1.0 / (d as f32).sqrt();
        w.add_tensor(&n("attn_norm.weight"), &[d as u64], GgmlType::F32, norm(&mut rng, d));
        w.add_tensor(&n("attn_q.weight"), &[d as u64, d as u64], ggml_type_of(mf), matrix(&mut rng, mf, d, d, 3.0 * sc));
        w.add_tensor(&n("attn_k.weight"), &[d as u64, kv as u64], ggml_type_of(mf), matrix(&mut rng, mf, kv, d, 3.0 * sc));
        w.add_tensor(&n("attn_v.weight"), &[d as u64, kv as u64], ggml_type_of(mf), matrix(&mut rng, mf, kv, d, sc));
        w.add_tensor(&n("attn_output.weight"), &[d as u64, d as u64], ggml_type_of(mf), matrix(&mut rng, mf, d, d, sc));
        w.add_tensor(&n("ffn_norm.weight"), &[d as u64], GgmlType::F32, norm(&mut rng, d));
        w.add_tensor(&n("ffn_gate.weight"), &[d as u64, f as u64], ggml_type_of(mf), matrix(&mut rng, mf, f, d, sc));
        w.add_tensor(&n("ffn_up.weight"), &[d as u64, f as u64], ggml_type_of(mf), matrix(&mut rng, mf, f, d, sc));
        w.add_tensor(&n("ffn_down.weight"), &[f as u64, d as u64], ggml_type_of(mf), matrix(&mut rng, mf, d, f, 1.0 / (f as f32).sqrt()));
        if spec.gemma {
            w.add_tensor(&n("attn_q_norm.weight"), &[dh as u64], GgmlType::F32, norm(&mut rng, dh));
            w.add_tensor(&n("attn_k_norm.weight"), &[dh as u64], GgmlType::F32, norm(&mut rng, dh));
            w.add_tensor(&n("post_attention_norm.weight"), &[d as u64], GgmlType::F32, norm(&mut rng, d));
            w.add_tensor(&n("post_ffw_norm.weight"), &[d as u64], GgmlType::F32, norm(&mut rng, d));
        }
    }
    w.add_tensor("output_norm.weight", &[d as u64], GgmlType::F32, norm(&mut rng, d));
    // The writer validates sizes; the inputs above are consistent by construction.
    w.to_bytes().unwrap_or_default()
}
