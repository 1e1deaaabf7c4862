//! `ferrolm quantize`: a Llama-family model (a GGUF of any supported type, or a Hugging Face
//! checkpoint through [`crate::hf`]) rewritten with its weights in another format, tensor by
//! tensor as llama-quantize chooses (llama.cpp's `llama_tensor_get_type`, for the types here):
//!
//! - 1-D tensors (norms) stay as they are;
//! - the output head (`output.weight`, or `token_embd.weight` when the model has none) becomes
//!   Q6_K, or Q8_0 when its rows are not a multiple of 256 (or the target is Q8_0, F16 or F32:
//!   then the target);
//! - Q4_K_M: Q4_K, except `attn_v` and `ffn_down` in the layers where llama.cpp spends more bits
//!   (`i < L/8 || i >= 7L/8 || (i - L/8) % 3 == 2`), which become Q6_K;
//! - a K-quant whose rows are not a multiple of 256 falls back: Q4_K -> Q5_0, Q6_K -> Q8_0.
//!
//! The block quantizers are the peers' reference ones ([`kernels::quant::quantize_row`]).

use crate::llama::{ggml_type_of, kernel_format};
use crate::ModelError;
use gguf::{GgufFile, GgufWriter, Value};
use kernels::quant::{dequantize_row, quantize_row};
use kernels::Format;

/// The target types of `ferrolm quantize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantTarget {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// Q8_0.
    Q8_0,
    /// Q4_0.
    Q4_0,
    /// Q4_1.
    Q4_1,
    /// llama.cpp's Q4_K_M mix.
    Q4KM,
    /// Q6_K.
    Q6K,
}

impl QuantTarget {
    /// Parses a type name as llama-quantize spells it (case-insensitive).
    pub fn parse(name: &str) -> Option<QuantTarget> {
        Some(match name.to_ascii_lowercase().as_str() {
            "f32" => QuantTarget::F32,
            "f16" => QuantTarget::F16,
            "q8_0" => QuantTarget::Q8_0,
            "q4_0" => QuantTarget::Q4_0,
            "q4_1" => QuantTarget::Q4_1,
            "q4_k_m" => QuantTarget::Q4KM,
            "q6_k" => QuantTarget::Q6K,
            _ => return None,
        })
    }

    /// llama.cpp's `general.file_type` of the target (its `llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            QuantTarget::F32 => 0,
            QuantTarget::F16 => 1,
            QuantTarget::Q4_0 => 2,
            QuantTarget::Q4_1 => 3,
            QuantTarget::Q8_0 => 7,
            QuantTarget::Q4KM => 15,
            QuantTarget::Q6K => 18,
        }
    }

    /// The format of the tensors without a rule of their own.
    fn base(self) -> Format {
        match self {
            QuantTarget::F32 => Format::F32,
            QuantTarget::F16 => Format::F16,
            QuantTarget::Q8_0 => Format::Q8_0,
            QuantTarget::Q4_0 => Format::Q4_0,
            QuantTarget::Q4_1 => Format::Q4_1,
            QuantTarget::Q4KM => Format::Q4_K,
            QuantTarget::Q6K => Format::Q6_K,
        }
    }
}

/// The format llama-quantize gives tensor `name` of `cols` columns (see the module doc).
fn format_for(target: QuantTarget, name: &str, cols: usize, n_layer: usize, has_output: bool) -> Format {
    let is_head = name == "output.weight" || (!has_output && name == "token_embd.weight");
    let mut f = if is_head {
        match target {
            QuantTarget::F32 | QuantTarget::F16 | QuantTarget::Q8_0 => target.base(),
            _ => Format::Q6_K,
        }
    } else {
        target.base()
    };
    if target == QuantTarget::Q4KM && !is_head {
        let layer = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|l| l.parse::<usize>().ok());
        if let Some(i) = layer.filter(|_| name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight")) {
            let n = n_layer;
            // (Past the first test i >= L/8, so the subtraction cannot underflow.)
            if i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2 {
                f = Format::Q6_K;
            }
        }
    }
    if !cols.is_multiple_of(256) {
        f = match f {
            Format::Q4_K => Format::Q5_0,
            Format::Q6_K => Format::Q8_0,
            other => other,
        };
    }
    f
}

/// `src` with its matrices in `target` (see the module doc), as GGUF bytes; `progress(done,
/// total)` after each tensor. Metadata is copied, `general.file_type` set to the target's.
pub fn quantize_gguf(src: &GgufFile, target: QuantTarget, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<u8>, ModelError> {
    let arch = src.architecture()?.to_string();
    let n_layer = src.get_u64(&format!("{arch}.block_count"))? as usize;
    let has_output = src.tensor("output.weight").is_some();
    let mut w = GgufWriter::new();
    for (k, v) in &src.metadata {
        if k != "general.file_type" {
            w.add_kv(k, v.clone());
        }
    }
    w.add_kv("general.file_type", Value::U32(target.file_type()));
    let total = src.tensors.len();
    for (done, info) in src.tensors.iter().enumerate() {
        let data = src.tensor_data(info);
        let from = kernel_format(info.ggml_type)
            .ok_or_else(|| ModelError::UnsupportedTensorType { tensor: info.name.clone(), ggml_type: info.ggml_type.name().to_string() })?;
        let (cols, rows) = match info.dims[..] {
            [cols, rows] => (cols as usize, rows as usize),
            _ => {
                // Vectors (norms) are kept as they are, as llama-quantize keeps them.
                w.add_tensor(&info.name, &info.dims, info.ggml_type, data.to_vec());
                progress(done + 1, total);
                continue;
            }
        };
        let to = format_for(target, &info.name, cols, n_layer, has_output);
        let out = if to == from {
            data.to_vec()
        } else {
            let (src_rb, dst_rb) = (from.row_bytes(cols), to.row_bytes(cols));
            let (Some(src_rb), Some(dst_rb)) = (src_rb, dst_rb) else {
                return Err(ModelError::Unsupported(format!("{}: rows of {cols} values cannot be stored as {to:?}", info.name)));
            };
            let mut row = vec![0f32; cols];
            let mut out = vec![0u8; rows * dst_rb];
            for (s, d) in data.chunks_exact(src_rb).zip(out.chunks_exact_mut(dst_rb)) {
                dequantize_row(from, s, &mut row);
                quantize_row(to, &row, d);
            }
            out
        };
        w.add_tensor(&info.name, &info.dims, ggml_type_of(to), out);
        progress(done + 1, total);
    }
    Ok(w.to_bytes()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_mix_is_llama_quantize_s() {
        // SmolLM2: 30 layers, 576-wide rows (no K-quant: fallbacks), 1536-wide ffn_down rows.
        let f = |name: &str, cols: usize| format_for(QuantTarget::Q4KM, name, cols, 30, false);
        assert_eq!(f("token_embd.weight", 576), Format::Q8_0);
        assert_eq!(f("blk.4.attn_q.weight", 576), Format::Q5_0);
        let more_bits = [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29];
        for i in 0..30 {
            let want = if more_bits.contains(&i) { (Format::Q8_0, Format::Q6_K) } else { (Format::Q5_0, Format::Q4_K) };
            assert_eq!((f(&format!("blk.{i}.attn_v.weight"), 576), f(&format!("blk.{i}.ffn_down.weight"), 1536)), want, "layer {i}");
        }
        // With an output head of its own, token_embd keeps the base type.
        assert_eq!(format_for(QuantTarget::Q4KM, "token_embd.weight", 2048, 16, true), Format::Q4_K);
        assert_eq!(format_for(QuantTarget::Q4KM, "output.weight", 2048, 16, true), Format::Q6_K);
        assert_eq!(format_for(QuantTarget::Q4_0, "output.weight", 2048, 16, true), Format::Q6_K);
        assert_eq!(format_for(QuantTarget::Q8_0, "output.weight", 2048, 16, true), Format::Q8_0);
        assert_eq!(QuantTarget::parse("Q4_K_M"), Some(QuantTarget::Q4KM));
        assert_eq!(QuantTarget::parse("q3_k"), None);
    }
}
