//! llama.cpp LoRA GGUF files: round trips, the metadata and layout llama.cpp expects, rsLoRA's
//! alpha, and refusals.

use gguf::{GgmlType, GgufFile, GgufWriter, Value};
use train::adapter::{load_gguf, load_gguf_bytes, save_gguf, ModelDims};
use train::{Adapter, Target};

use crate::{assert_mentions, config, message, random_adapter, smollm2_dims, tiny_dims, TempDir};

fn to_bytes(adapter: &Adapter, dims: &ModelDims, name: &str) -> Vec<u8> {
    let dir = TempDir::new(name);
    let path = dir.join("adapter.gguf");
    save_gguf(adapter, dims, &path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn smollm2_all_targets_round_trip_exactly_with_the_layout_llama_cpp_reads() {
    let dims = smollm2_dims();
    let adapter = random_adapter(&dims, config(8, 16.0, false, &Target::ALL), 12);
    let bytes = to_bytes(&adapter, &dims, "gguf-smollm2");
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_str("general.type").unwrap(), "adapter");
    assert_eq!(file.get_str("adapter.type").unwrap(), "lora");
    assert_eq!(file.get("adapter.lora.alpha"), Some(&Value::F32(16.0)));
    assert_eq!(file.tensors.len(), 30 * 7 * 2);
    for (name, dims) in [
        ("blk.0.attn_q.weight.lora_a", [576, 8]),
        ("blk.0.attn_q.weight.lora_b", [8, 576]),
        ("blk.29.attn_k.weight.lora_b", [8, 192]),
        ("blk.7.attn_output.weight.lora_a", [576, 8]),
        ("blk.7.ffn_gate.weight.lora_b", [8, 1536]),
        ("blk.7.ffn_down.weight.lora_a", [1536, 8]),
        ("blk.7.ffn_down.weight.lora_b", [8, 576]),
    ] {
        let info = file.tensor(name).unwrap_or_else(|| panic!("{name} is written"));
        assert_eq!(info.dims, dims, "{name}: ne innermost first");
        assert_eq!(info.ggml_type, GgmlType::F32);
    }
    // B of q goes out as it is in memory: GGUF row order is the file's.
    let q_b = file.tensor_data(file.tensor("blk.3.attn_q.weight.lora_b").unwrap());
    let values: Vec<f32> = q_b.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(values, adapter.layers[3][Target::Q.index()].as_ref().unwrap().b);
    assert_eq!(load_gguf_bytes(bytes, &dims).unwrap(), adapter);
}

#[test]
fn rslora_is_written_with_the_alpha_that_gives_llama_cpp_the_same_scale() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(4, 8.0, true, &[Target::Q, Target::Down]), 3);
    let bytes = to_bytes(&adapter, &dims, "gguf-rslora");
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    // alpha / sqrt(R) = 8 / 2 = 4 = alpha' / R with alpha' = 16.
    assert_eq!(file.get_f32("adapter.lora.alpha").unwrap(), 16.0);
    let back = load_gguf_bytes(bytes, &dims).unwrap();
    assert_eq!((back.config.alpha, back.config.rslora, back.config.scaling()), (16.0, false, adapter.config.scaling()));
    assert_eq!(back.layers, adapter.layers);
    assert_eq!(back.config.targets, [Target::Q, Target::Down]);
}

#[test]
fn a_subset_of_targets_with_gaps_round_trips() {
    let dims = tiny_dims();
    let mut adapter = random_adapter(&dims, config(3, 5.0, false, &[Target::K, Target::O, Target::Up]), 4);
    adapter.layers[0][Target::K.index()] = None;
    adapter.layers[1] = std::array::from_fn(|_| None);
    let bytes = to_bytes(&adapter, &dims, "gguf-subset");
    assert_eq!(GgufFile::from_bytes(bytes.clone()).unwrap().tensors.len(), 2 * (2 + 3));
    assert_eq!(load_gguf_bytes(bytes, &dims).unwrap(), adapter);
}

/// The metadata and tensors of a file, to edit and write again.
struct Parts {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Parts {
    /// The parts of a saved tiny adapter: all targets, rank 2, alpha 4.
    fn tiny() -> Parts {
        let dims = tiny_dims();
        let adapter = random_adapter(&dims, config(2, 4.0, false, &Target::ALL), 21);
        let bytes = to_bytes(&adapter, &dims, &format!("gguf-parts-{:?}", std::thread::current().id()));
        let file = GgufFile::from_bytes(bytes).unwrap();
        let tensors = file.tensors.iter().map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type, file.tensor_data(t).to_vec())).collect();
        Parts { metadata: file.metadata.clone(), tensors }
    }

    fn set(mut self, key: &str, value: Option<Value>) -> Parts {
        self.metadata.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.metadata.push((key.to_owned(), value));
        }
        self
    }

    fn tensor(&mut self, name: &str) -> &mut (String, Vec<u64>, GgmlType, Vec<u8>) {
        self.tensors.iter_mut().find(|t| t.0 == name).expect("a tensor of the file")
    }

    fn bytes(&self) -> Vec<u8> {
        let mut writer = GgufWriter::new();
        for (key, value) in &self.metadata {
            writer.add_kv(key, value.clone());
        }
        for (name, dims, ggml_type, data) in &self.tensors {
            writer.add_tensor(name, dims, *ggml_type, data.clone());
        }
        writer.to_bytes().unwrap()
    }

    fn load(&self) -> Result<Adapter, train::adapter::AdapterError> {
        load_gguf_bytes(self.bytes(), &tiny_dims())
    }

    fn refusal(&self) -> String {
        message(self.load().expect_err("the edited adapter must be refused"))
    }
}

#[test]
fn alpha_absent_or_zero_means_scale_one_as_in_llama_cpp() {
    let adapter = Parts::tiny().set("adapter.lora.alpha", None).load().unwrap();
    assert_eq!((adapter.config.alpha, adapter.config.scaling()), (2.0, 1.0));
    let adapter = Parts::tiny().set("adapter.lora.alpha", Some(Value::F32(0.0))).load().unwrap();
    assert_eq!(adapter.config.scaling(), 1.0);
    let adapter = Parts::tiny().set("adapter.lora.alpha", Some(Value::U32(6))).load().unwrap();
    assert_eq!(adapter.config.alpha, 6.0, "an integer alpha is read as a number");
}

#[test]
fn f16_bf16_and_norm_tensors_are_read_as_llama_cpp_reads_them() {
    for (ggml_type, to_bits) in [
        (GgmlType::F16, (|v| half::f16::from_f32(v).to_bits()) as fn(f32) -> u16),
        (GgmlType::BF16, (|v| half::bf16::from_f32(v).to_bits()) as fn(f32) -> u16),
    ] {
        let mut parts = Parts::tiny();
        let expected = parts.load().unwrap();
        for tensor in &mut parts.tensors {
            // Values k/8 with small k are exact in both halves.
            let values: Vec<f32> = (0..tensor.3.len() / 4).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
            tensor.2 = ggml_type;
            tensor.3 = values.iter().flat_map(|&v| to_bits(v).to_le_bytes()).collect();
        }
        parts.tensors.push(("blk.0.attn_norm.weight".into(), vec![8], GgmlType::F32, vec![0; 32]));
        let back = parts.load().unwrap();
        assert_eq!(back.config, expected.config);
        let pair = back.layers[1][Target::Gate.index()].as_ref().unwrap();
        assert_eq!(&pair.a[..3], [-1.0, -0.875, -0.75], "{ggml_type}");
    }
}

#[test]
fn files_for_another_model_or_of_another_kind_are_refused() {
    assert_mentions(
        &Parts::tiny().set("general.type", Some(Value::from("model"))).refusal(),
        &["adapter (in memory): general.type is \"model\": a llama.cpp LoRA adapter has general.type \"adapter\"; is this a model?"],
    );
    assert_mentions(&Parts::tiny().set("general.type", None).refusal(), &["general.type is missing: a llama.cpp LoRA adapter"]);
    assert_mentions(
        &Parts::tiny().set("general.architecture", Some(Value::from("gemma3"))).refusal(),
        &["general.architecture is \"gemma3\": the model is \"llama\": the adapter was made for another model"],
    );
    assert_mentions(
        &Parts::tiny().set("adapter.type", Some(Value::from("alora"))).refusal(),
        &["adapter.type is \"alora\": ferrolm reads plain LoRA adapters"],
    );
    assert_mentions(&Parts::tiny().set("adapter.type", Some(Value::U8(1))).refusal(), &["adapter.type is U8(1), expected a string"]);
    assert_mentions(
        &Parts::tiny().set("adapter.lora.alpha", Some(Value::from("sixteen"))).refusal(),
        &["adapter.lora.alpha is the string \"sixteen\", expected a finite number"],
    );
    assert_mentions(&Parts::tiny().set("adapter.lora.alpha", Some(Value::F32(f32::INFINITY))).refusal(), &["expected a finite number"]);

    let mut parts = Parts::tiny();
    parts.tensors.clear();
    assert_mentions(&parts.refusal(), &["the file holds no LoRA tensors"]);

    let error = message(load_gguf_bytes(Parts::tiny().bytes(), &ModelDims { n_layer: 2, ..tiny_dims() }).unwrap_err());
    assert_mentions(&error, &["tensor \"blk.2.", "is for layer 2, but the model has 2 layers"]);
    let error = message(load_gguf_bytes(Parts::tiny().bytes(), &ModelDims { f: 16, ..tiny_dims() }).unwrap_err());
    assert_mentions(&error, &["tensor \"blk.0.ffn_gate.weight.lora_b\" has shape [2, 12], expected [2, 16]: the adapter was made for another model"]);
}

#[test]
fn foreign_misshapen_and_damaged_tensors_are_refused() {
    for (name, hint) in [
        (
            "token_embd.weight.lora_a",
            "ferrolm adapts only attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up and ffn_down (not the embeddings or the output head)",
        ),
        ("output.weight.lora_b", "ferrolm adapts only attn_q"),
        ("blk.0.attn_qkv.weight.lora_a", "ferrolm adapts only attn_q"),
        ("blk.0.attn_q.weight.lora_c", ".lora_a or .lora_b"),
        ("blk.0.attn_q.bias", ".lora_a or .lora_b"),
    ] {
        let mut parts = Parts::tiny();
        parts.tensors.push((name.into(), vec![1], GgmlType::F32, vec![0; 4]));
        assert_mentions(&parts.refusal(), &[&format!("tensor \"{name}\" is not a LoRA A or B of q, k, v, o, gate, up or down: "), hint]);
    }

    let mut parts = Parts::tiny();
    parts.tensors.retain(|t| t.0 != "blk.1.attn_v.weight.lora_a");
    assert_mentions(&parts.refusal(), &["tensor \"blk.1.attn_v.weight.lora_b\" has no partner \"blk.1.attn_v.weight.lora_a\""]);

    let mut parts = Parts::tiny();
    parts.tensor("blk.0.attn_q.weight.lora_a").1 = vec![2, 8];
    assert_mentions(&parts.refusal(), &["has shape [2, 8], expected [8, 2]: lora_a is not transposed"]);

    let mut parts = Parts::tiny();
    let (a, b) = ("blk.2.ffn_up.weight.lora_a", "blk.2.ffn_up.weight.lora_b");
    *parts.tensor(a) = (a.into(), vec![8, 3], GgmlType::F32, vec![0; 8 * 3 * 4]);
    *parts.tensor(b) = (b.into(), vec![3, 12], GgmlType::F32, vec![0; 12 * 3 * 4]);
    assert_mentions(&parts.refusal(), &["tensor \"blk.2.ffn_up.weight.lora_b\" has shape [3, 12], expected [2, 12]: other pairs have rank 2"]);

    let mut parts = Parts::tiny();
    parts.tensor("blk.0.ffn_down.weight.lora_b").3[4..8].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    assert_mentions(&parts.refusal(), &["tensor \"blk.0.ffn_down.weight.lora_b\" holds -inf at element 1: the adapter is damaged"]);

    // A quantized adapter (llama.cpp's converter can write Q8_0): its rows must be whole blocks of
    // 32, so this one is for a model with D = 32.
    let dims = ModelDims { d: 32, ..tiny_dims() };
    let adapter = random_adapter(&dims, config(2, 4.0, false, &[Target::Gate]), 1);
    let mut parts = Parts { metadata: Parts::tiny().metadata, tensors: Vec::new() };
    for (layer, pairs) in adapter.layers.iter().enumerate() {
        let pair = pairs[Target::Gate.index()].as_ref().unwrap();
        let base = Target::Gate.gguf_name(layer);
        parts.tensors.push((format!("{base}.lora_a"), vec![32, 2], GgmlType::Q8_0, vec![0; 2 * 34]));
        parts.tensors.push((format!("{base}.lora_b"), vec![2, 12], GgmlType::F32, pair.b.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let error = message(load_gguf_bytes(parts.bytes(), &dims).unwrap_err());
    assert_mentions(
        &error,
        &["tensor \"blk.0.ffn_gate.weight.lora_a\" is stored as Q8_0: ferrolm reads F32, F16 and BF16 adapters; convert it again"],
    );
}

#[test]
fn every_truncation_is_an_error_and_a_missing_file_names_its_path() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(1, 2.0, false, &[Target::V]), 2);
    let bytes = to_bytes(&adapter, &dims, "gguf-truncated");
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let data_end = file.tensors.iter().map(|t| file.data_offset() + t.offset + t.n_bytes).max().unwrap() as usize;
    for cut in 0..data_end {
        assert!(load_gguf_bytes(bytes[..cut].to_vec(), &dims).is_err(), "a file cut at {cut} of {data_end} bytes loads");
    }
    assert_eq!(load_gguf_bytes(bytes[..data_end].to_vec(), &dims).unwrap(), adapter, "the padding after the last tensor is optional");

    let dir = TempDir::new("gguf-missing");
    let error = message(load_gguf(dir.join("absent.gguf"), &dims).unwrap_err());
    assert_mentions(&error, &["absent.gguf: no such file: give the .gguf written by convert_lora_to_gguf.py or ferrolm"]);
}

#[test]
fn an_adapter_llama_cpp_would_misread_is_not_written() {
    let dims = tiny_dims();
    let mut adapter = random_adapter(&dims, config(2, 0.0, false, &[Target::Q]), 1);
    let dir = TempDir::new("gguf-save-refused");
    let error = message(save_gguf(&adapter, &dims, dir.join("a.gguf")).unwrap_err());
    assert_mentions(&error, &["cannot save the adapter: alpha 0 cannot be written to a llama.cpp adapter (it reads 0 as scale 1)"]);
    assert!(!dir.join("a.gguf").exists());
    adapter.config.alpha = 4.0;
    adapter.layers[2][0].as_mut().unwrap().a[5] = f32::NAN;
    assert_mentions(&message(save_gguf(&adapter, &dims, dir.join("a.gguf")).unwrap_err()), &["layer 2 q A holds NaN at element 5"]);
}
