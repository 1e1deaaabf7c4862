//! Merging an adapter into a copy of the base model's GGUF: every adapted matrix becomes
//! W + scaling B A, stored in a float or 8-bit format (a 4-bit format would round most of the
//! adapter's change away: its steps are larger than B A's entries); everything else is copied
//! byte for byte, metadata included.

use crate::lora::{merge_into, Adapter, Target};
use gguf::{GgmlType, GgufFile, GgufWriter};
use kernels::quant::{dequantize_row, quantize_row};
use kernels::Format;
use std::path::Path;

/// How merged matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergedType {
    /// IEEE half (the default: keeps B A to about 3 decimal digits of W).
    F16,
    /// f32.
    F32,
    /// 8-bit blocks of 32 (smaller; rounds at about 1/254 of each block's largest weight).
    Q8_0,
}

impl MergedType {
    fn ggml(self) -> GgmlType {
        match self {
            MergedType::F16 => GgmlType::F16,
            MergedType::F32 => GgmlType::F32,
            MergedType::Q8_0 => GgmlType::Q8_0,
        }
    }

    fn format(self) -> Format {
        match self {
            MergedType::F16 => Format::F16,
            MergedType::F32 => Format::F32,
            MergedType::Q8_0 => Format::Q8_0,
        }
    }
}

/// Writes `base` with `adapter` merged (scaled by `user_scale` times its scaling) to `out`;
/// returns how many matrices changed.
pub fn merge_gguf(base: &GgufFile, adapter: &Adapter, user_scale: f32, as_type: MergedType, out: &Path) -> Result<usize, String> {
    let scaling = adapter.config.scaling() * user_scale;
    let mut writer = GgufWriter::new();
    for (k, v) in &base.metadata {
        writer.add_kv(k, v.clone());
    }
    let mut merged = 0;
    for info in &base.tensors {
        let pair = adapter
            .layers
            .iter()
            .enumerate()
            .find_map(|(l, pairs)| Target::ALL.iter().find(|t| t.gguf_name(l) == info.name).and_then(|t| pairs[t.index()].as_ref()));
        let data = base.tensor_data(info);
        let Some(pair) = pair else {
            writer.add_tensor(&info.name, &info.dims, info.ggml_type, data.to_vec());
            continue;
        };
        let (cols, rows) = match info.dims[..] {
            [c, r] => (c as usize, r as usize),
            _ => return Err(format!("{}: expected a matrix, found dims {:?}", info.name, info.dims)),
        };
        if (rows, cols) != (pair.n_out, pair.n_in) {
            return Err(format!("{}: the model's ({rows}, {cols}) does not match the adapter's ({}, {})", info.name, pair.n_out, pair.n_in));
        }
        let format = model::llama::kernel_format(info.ggml_type)
            .ok_or_else(|| format!("{}: type {} cannot be merged into", info.name, info.ggml_type.name()))?;
        let row_bytes = format.row_bytes(cols).ok_or_else(|| format!("{}: bad row length {cols}", info.name))?;
        let mut w = vec![0f32; rows * cols];
        for (src, dst) in data.chunks_exact(row_bytes).zip(w.chunks_exact_mut(cols)) {
            dequantize_row(format, src, dst);
        }
        merge_into(&mut w, pair, scaling, 1.0);
        let out_format = as_type.format();
        let out_row = out_format.row_bytes(cols).ok_or_else(|| format!("{}: {cols} columns cannot be stored as {:?}", info.name, as_type))?;
        let mut bytes = vec![0u8; rows * out_row];
        for (src, dst) in w.chunks_exact(cols).zip(bytes.chunks_exact_mut(out_row)) {
            quantize_row(out_format, src, dst);
        }
        writer.add_tensor(&info.name, &info.dims, as_type.ggml(), bytes);
        merged += 1;
    }
    writer.write(out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(merged)
}
