//! Opens the real SmolLM2-135M-Instruct Q4_1 file when it is present (at $FERROLM_MODEL or
//! the default cache path). The expected facts were read with gguf-py 0.19's GGUFReader.

use gguf::{GgmlType, GgufFile, GgufWriter};

const DEFAULT_MODEL: &str = "/root/.cache/ferrolm/SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<std::path::PathBuf> {
    let path: std::path::PathBuf = std::env::var_os("FERROLM_MODEL").map(Into::into).unwrap_or_else(|| DEFAULT_MODEL.into());
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: model file {} not found (set FERROLM_MODEL)", path.display());
        None
    }
}

#[test]
fn real_smollm2_file_opens() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    for info in &file.tensors {
        assert_eq!(file.tensor_data(info).len() as u64, info.n_bytes, "{}", info.name);
    }
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.ggml_type, embd.dims.as_slice()), (GgmlType::Q8_0, &[576, 49152][..]));
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!((q.ggml_type, q.dims.as_slice()), (GgmlType::Q4_1, &[576, 576][..]));
    assert!(file.tensor("blk.29.ffn_down.weight").is_some());

    assert_eq!(file.version, 3);
    assert_eq!(file.metadata.len(), 33);
    assert_eq!(file.tensors.len(), 272);
    assert_eq!(file.data_offset(), 1_785_664);
    let count = |ty| file.tensors.iter().filter(|t| t.ggml_type == ty).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::F32), count(GgmlType::Q8_0)), (210, 61, 1));
    assert_eq!(file.get_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(file.get_array("tokenizer.ggml.merges").unwrap().len(), 48900);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert!(!file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    let norm = file.tensor("output_norm.weight").unwrap();
    assert_eq!(file.data_offset() + norm.offset, 98_360_128);
    assert_eq!(norm.n_bytes, 2304);
}

/// Equivalence with llama.cpp's writer: re-writing every entry and tensor of the real file
/// in file order must reproduce it byte for byte (same layout, padding and offsets).
#[test]
fn rewriting_the_real_file_is_byte_identical() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let mut writer = GgufWriter::new();
    writer.set_version(file.version);
    for (key, value) in &file.metadata {
        writer.add_kv(key, value.clone());
    }
    for info in &file.tensors {
        writer.add_tensor(&info.name, &info.dims, info.ggml_type, file.tensor_data(info).to_vec());
    }
    let bytes = writer.to_bytes().unwrap();
    assert_eq!(bytes.len(), file.bytes().len());
    let first_difference = bytes.iter().zip(file.bytes()).position(|(a, b)| a != b);
    assert_eq!(first_difference, None);
}
