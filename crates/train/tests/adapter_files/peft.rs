//! PEFT directories: round trips, the file's B row order, the config PEFT reads, and refusals.

use safetensors_file::{serialize, Dtype, SafeTensors};
use serde_json::{json, Value};
use train::adapter::{load, load_peft, save_peft, ModelDims, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
use train::{Adapter, Target};

use crate::{assert_mentions, config, message, random_adapter, smollm2_dims, tiny_dims, TempDir};

const Q_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

#[test]
fn smollm2_all_targets_round_trip_exactly() {
    let dims = smollm2_dims();
    let adapter = random_adapter(&dims, config(8, 16.0, false, &Target::ALL), 11);
    let dir = TempDir::new("peft-smollm2");
    save_peft(&adapter, &dims, dir.path(), "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
    assert_eq!(load_peft(dir.path(), &dims).unwrap(), adapter);

    let weights = SafeTensors::open(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    assert_eq!(weights.names().count(), 30 * 7 * 2);
    assert_eq!(weights.metadata_value("format"), Some("pt"));
    for (name, shape) in [
        ("base_model.model.model.layers.29.self_attn.q_proj.lora_A.weight", [8, 576]),
        ("base_model.model.model.layers.29.self_attn.k_proj.lora_B.weight", [192, 8]),
        ("base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight", [8, 576]),
        ("base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight", [1536, 8]),
        ("base_model.model.model.layers.3.mlp.down_proj.lora_A.weight", [8, 1536]),
        ("base_model.model.model.layers.3.mlp.down_proj.lora_B.weight", [576, 8]),
    ] {
        assert_eq!(weights.shape(name).unwrap(), shape, "{name}");
        assert_eq!(weights.dtype(name).unwrap(), Dtype::F32);
    }
}

#[test]
fn rslora_with_a_subset_of_targets_and_gaps_round_trips() {
    let dims = tiny_dims();
    let mut adapter = random_adapter(&dims, config(3, 0.3, true, &[Target::Q, Target::V, Target::Down]), 5);
    adapter.config.dropout = 0.05;
    adapter.layers[1][Target::Q.index()] = None;
    adapter.layers[2] = std::array::from_fn(|_| None);
    let dir = TempDir::new("peft-rslora");
    save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
    let back = load_peft(dir.path(), &dims).unwrap();
    assert_eq!(back, adapter);
    assert_eq!(back.config.scaling(), 0.3 / 3f32.sqrt());

    let config: Value = serde_json::from_slice(&std::fs::read(dir.join(PEFT_CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["use_rslora"], json!(true));
    assert_eq!(config["lora_dropout"], json!(0.05), "the shortest decimal, not 0.05000000074505806");
    assert_eq!(config["lora_alpha"], json!(0.3));
    assert_eq!(config["target_modules"], json!(["q_proj", "v_proj", "down_proj"]));
}

#[test]
fn the_config_is_what_peft_writes() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(2, 16.0, false, &[Target::Q, Target::K]), 3);
    let dir = TempDir::new("peft-config");
    save_peft(&adapter, &dims, dir.path(), "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
    let text = std::fs::read_to_string(dir.join(PEFT_CONFIG_FILE)).unwrap();
    let expected = r#"{
  "alpha_pattern": {},
  "auto_mapping": null,
  "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
  "bias": "none",
  "corda_config": null,
  "ensure_weight_tying": false,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 16,
  "lora_bias": false,
  "lora_dropout": 0.0,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "qalora_group_size": 16,
  "r": 2,
  "rank_pattern": {},
  "revision": null,
  "target_modules": [
    "q_proj",
    "k_proj"
  ],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_dora": false,
  "use_qalora": false,
  "use_rslora": false
}"#;
    assert_eq!(text, expected);
}

/// Row `r` of B (out, R) in memory holds `r` in every column.
fn row_numbered(adapter: &mut Adapter) {
    for pairs in &mut adapter.layers {
        for pair in pairs.iter_mut().flatten() {
            let rank = pair.b.len() / pair.n_out;
            pair.b = (0..pair.n_out).flat_map(|r| std::iter::repeat_n(r as f32, rank)).collect();
        }
    }
}

/// The first column of tensor `name`: for a row-numbered B, which memory row each file row holds.
fn first_column(weights: &SafeTensors, name: &str) -> Vec<f32> {
    let rank = weights.shape(name).unwrap()[1] as usize;
    weights.to_f32_vec(name).unwrap().chunks(rank).map(|row| row[0]).collect()
}

#[test]
fn b_of_q_and_k_is_written_in_hugging_face_row_order() {
    // Dh = 4: within a head, HF row 1 (x1) is GGUF row 2 and HF row 2 (y0) is GGUF row 1, so file
    // row h holds memory row [0, 2, 1, 3][h] of each head. Checked by hand from the rotate-half and
    // adjacent-pair layouts: HF (x0 x1 | y0 y1), GGUF (x0 y0 x1 y1).
    let dims = tiny_dims();
    let mut adapter = random_adapter(&dims, config(2, 4.0, false, &Target::ALL), 9);
    row_numbered(&mut adapter);
    let dir = TempDir::new("peft-row-order");
    save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
    let weights = SafeTensors::open(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    assert_eq!(first_column(&weights, Q_B), [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0], "q: H = 2 heads");
    let k_b = "base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight";
    assert_eq!(first_column(&weights, k_b), [0.0, 2.0, 1.0, 3.0], "k: Hkv = 1 head");
    let v_b = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight";
    assert_eq!(first_column(&weights, v_b), [0.0, 1.0, 2.0, 3.0], "v is not rotated");
    let q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    assert_eq!(weights.to_f32_vec(q_a).unwrap(), adapter.layers[0][0].as_ref().unwrap().a, "A is never permuted");
    assert_eq!(load_peft(dir.path(), &dims).unwrap(), adapter);
}

#[test]
fn smollm2_b_rows_follow_hf_to_gguf_row_per_head() {
    let dims = smollm2_dims();
    let mut adapter = random_adapter(&dims, config(1, 1.0, false, &[Target::Q, Target::K]), 2);
    row_numbered(&mut adapter);
    let dir = TempDir::new("peft-smollm2-rows");
    save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
    let weights = SafeTensors::open(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    for (module, heads) in [("q_proj", 9), ("k_proj", 3)] {
        let rows = first_column(&weights, &format!("base_model.model.model.layers.5.self_attn.{module}.lora_B.weight"));
        let expected: Vec<f32> = (0..heads * 64).map(|hf| train::lora::hf_to_gguf_row(hf, 64) as f32).collect();
        assert_eq!(rows, expected, "{module}");
        // Spot check: HF row 32 of a head (its y0) is GGUF row 1; HF row 1 (x1) is GGUF row 2.
        assert_eq!((rows[32], rows[1], rows[64 + 33]), (1.0, 2.0, 64.0 + 3.0));
    }
}

#[test]
fn f16_and_bf16_weights_are_read() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(2, 4.0, false, &[Target::V, Target::Up]), 4);
    let dir = TempDir::new("peft-halves");
    save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
    let weights = SafeTensors::open(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    type ToBits = fn(f32) -> u16;
    type FromBits = fn(u16) -> f32;
    let halves: [(Dtype, ToBits, FromBits); 2] = [
        (Dtype::F16, |v| half::f16::from_f32(v).to_bits(), |b| half::f16::from_bits(b).to_f32()),
        (Dtype::BF16, |v| half::bf16::from_f32(v).to_bits(), |b| half::bf16::from_bits(b).to_f32()),
    ];
    for (dtype, to_bits, from_bits) in halves {
        let tensors: Vec<(String, Vec<u64>, Vec<u8>)> = weights
            .names()
            .map(|n| {
                (
                    n.to_owned(),
                    weights.shape(n).unwrap().to_vec(),
                    weights.to_f32_vec(n).unwrap().iter().flat_map(|&v| to_bits(v).to_le_bytes()).collect(),
                )
            })
            .collect();
        let to_write: Vec<_> = tensors.iter().map(|(n, s, b)| (n.as_str(), dtype, &s[..], &b[..])).collect();
        let bytes = serialize(&to_write, &[]).unwrap();
        let config = std::fs::read(dir.join(PEFT_CONFIG_FILE)).unwrap();
        let back = train::adapter::load_peft_bytes(&config, bytes, &dims).unwrap();
        let mut rounded = adapter.clone();
        for pair in rounded.layers.iter_mut().flatten().flatten() {
            for v in pair.a.iter_mut().chain(pair.b.iter_mut()) {
                *v = from_bits(to_bits(*v));
            }
        }
        assert_eq!(back, rounded, "{dtype}");
    }
}

/// A saved tiny adapter (all targets, rank 2) whose files a test edits before loading.
struct Fixture {
    dir: TempDir,
    dims: ModelDims,
    config: Value,
    /// (name, dtype, shape, bytes) in file order.
    tensors: Vec<(String, Dtype, Vec<u64>, Vec<u8>)>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dims = tiny_dims();
        let adapter = random_adapter(&dims, config(2, 4.0, false, &Target::ALL), 8);
        let dir = TempDir::new(name);
        save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
        let config = serde_json::from_slice(&std::fs::read(dir.join(PEFT_CONFIG_FILE)).unwrap()).unwrap();
        let weights = SafeTensors::open(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
        let tensors =
            weights.tensors().iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), weights.bytes(&t.name).unwrap().to_vec())).collect();
        Fixture { dir, dims, config, tensors }
    }

    fn set(mut self, key: &str, value: Value) -> Fixture {
        self.config[key] = value;
        self
    }

    fn tensor(&mut self, name: &str) -> &mut (String, Dtype, Vec<u64>, Vec<u8>) {
        self.tensors.iter_mut().find(|t| t.0 == name).expect("a tensor of the fixture")
    }

    /// Writes the edited files and loads them, returning the error message.
    fn refusal(&self) -> String {
        message(self.load().expect_err("the edited adapter must be refused"))
    }

    fn load(&self) -> Result<Adapter, train::adapter::AdapterError> {
        std::fs::write(self.dir.join(PEFT_CONFIG_FILE), serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        let to_write: Vec<_> = self.tensors.iter().map(|(n, d, s, b)| (n.as_str(), *d, &s[..], &b[..])).collect();
        std::fs::write(self.dir.join(PEFT_WEIGHTS_FILE), serialize(&to_write, &[]).unwrap()).unwrap();
        load_peft(self.dir.path(), &self.dims)
    }
}

#[test]
fn unknown_keys_and_missing_defaults_are_accepted() {
    let mut fixture = Fixture::new("peft-lenient").set("a_key_from_peft_2030", json!({"x": [1, 2]})).set("peft_version", json!("0.19.1"));
    let map = fixture.config.as_object_mut().unwrap();
    for key in ["use_rslora", "lora_dropout", "bias", "fan_in_fan_out", "task_type", "use_dora", "rank_pattern", "eva_config"] {
        map.remove(key);
    }
    let adapter = fixture.load().unwrap();
    assert_eq!((adapter.config.rank, adapter.config.alpha, adapter.config.rslora), (2, 4.0, false));
    // Absent lora_alpha is PEFT's default 8; null counts as absent.
    let fixture = fixture.set("lora_alpha", Value::Null).set("rank_pattern", json!({})).set("modules_to_save", json!([]));
    assert_eq!(fixture.load().unwrap().config.alpha, 8.0);
}

#[test]
fn target_modules_may_be_all_linear_a_plain_regex_or_dotted_names() {
    let fixture = Fixture::new("peft-targets").set("target_modules", json!("all-linear"));
    assert_eq!(fixture.load().unwrap().config.targets, Target::ALL);
    let fixture = fixture.set("target_modules", json!(".*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"));
    assert_eq!(fixture.load().unwrap().config.targets, Target::ALL);
    let names = json!(["self_attn.q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "q_proj"]);
    assert_eq!(fixture.set("target_modules", names).load().unwrap().config.targets, Target::ALL);
}

#[test]
fn settings_ferrolm_cannot_honour_are_refused_by_name() {
    let cases: [(&str, Value, &[&str]); 17] = [
        ("fan_in_fan_out", json!(true), &["adapter_config.json: fan_in_fan_out is true:", "fan_in_fan_out=False"]),
        ("bias", json!("all"), &["adapter_config.json: bias is \"all\": ferrolm adapters carry no biases; train with bias=\"none\""]),
        ("rank_pattern", json!({"q_proj": 16}), &["rank_pattern is {\"q_proj\":16}:", "one rank for every map"]),
        ("alpha_pattern", json!({"k_proj": 32}), &["alpha_pattern is {\"k_proj\":32}:", "one alpha for every map"]),
        ("use_dora", json!(true), &["use_dora is true: DoRA adapters", "use_dora=False"]),
        ("peft_type", json!("IA3"), &["peft_type is \"IA3\": ferrolm reads LoRA adapters only"]),
        ("task_type", json!("SEQ_CLS"), &["task_type is \"SEQ_CLS\":", "CAUSAL_LM"]),
        ("modules_to_save", json!(["score"]), &["modules_to_save is [\"score\"]:", "train without modules_to_save"]),
        ("lora_bias", json!(true), &["lora_bias is true:"]),
        ("use_qalora", json!(true), &["use_qalora is true:"]),
        ("layer_replication", json!([[0, 2], [1, 3]]), &["layer_replication is [[0,2],[1,3]]:"]),
        ("trainable_token_indices", json!([5, 6]), &["trainable_token_indices is [5,6]:"]),
        ("init_lora_weights", json!("pissa_niter_4"), &["init_lora_weights is \"pissa_niter_4\":", "path_initial_model_for_weight_conversion"]),
        ("target_modules", json!(["q_proj", "lm_head"]), &["target_modules is \"lm_head\": ferrolm adapts only q_proj, k_proj"]),
        ("target_modules", json!("model\\.layers\\.\\d+\\.self_attn\\.q_proj"), &["target_modules is \"model", "write the list"]),
        ("r", json!(0), &["adapter_config.json: r is 0, expected an integer from 1 to 65536"]),
        ("lora_dropout", json!(1.5), &["lora_dropout is 1.5, expected a probability in [0, 1)"]),
    ];
    for (key, value, parts) in cases {
        let refusal = Fixture::new(&format!("peft-refuse-{key}")).set(key, value).refusal();
        assert_mentions(&refusal, parts);
    }
    let mut fixture = Fixture::new("peft-refuse-no-type");
    fixture.config.as_object_mut().unwrap().remove("peft_type");
    assert_mentions(&fixture.refusal(), &["peft_type is missing: every PEFT adapter_config.json names its method"]);
}

#[test]
fn tensors_that_do_not_fit_the_model_or_the_config_are_refused() {
    let dims_with = |n_layer, d| ModelDims { n_layer, d, ..tiny_dims() };
    let mut fixture = Fixture::new("peft-layers");
    fixture.dims = dims_with(2, 8);
    assert_mentions(
        &fixture.refusal(),
        &[
            "adapter_model.safetensors: tensor \"base_model.model.model.layers.2.",
            "is for layer 2, but the model has 2 layers: the adapter was made for another model",
        ],
    );
    fixture.dims = dims_with(3, 16);
    assert_mentions(
        &fixture.refusal(),
        &["has shape [2, 8], expected [2, 16]: the adapter was made for another model (this one is llama: D 16, H 2"],
    );

    let fixture = Fixture::new("peft-unlisted").set("target_modules", json!(["q_proj", "v_proj"]));
    assert_mentions(&fixture.refusal(), &["adapts k_proj, which target_modules in adapter_config.json does not list", "do not belong together"]);

    let fixture = Fixture::new("peft-rank").set("r", json!(4));
    assert_mentions(&fixture.refusal(), &["has shape [2, 8], expected [4, 8]: r in adapter_config.json is 4"]);

    let mut fixture = Fixture::new("peft-transposed");
    fixture.tensor(Q_B).2 = vec![2, 8];
    assert_mentions(&fixture.refusal(), &["has shape [2, 8], expected [8, 2]: it is transposed: PEFT stores A as (r, in) and B as (out, r)"]);
}

#[test]
fn foreign_missing_and_damaged_tensors_are_refused() {
    for (name, hint) in [
        ("base_model.model.model.embed_tokens.lora_embedding_A", "adapters of the token embeddings are not supported"),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", "DoRA magnitude vector"),
        ("base_model.model.lm_head.lora_A.weight", "adapters of the output head are not supported"),
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", "no adapter name"),
        ("base_model.model.model.layers.00.self_attn.q_proj.lora_A.weight", "keys look like"),
        ("base_model.model.model.layers.0.self_attn.down_proj.lora_A.weight", "keys look like"),
    ] {
        let mut fixture = Fixture::new("peft-foreign");
        fixture.tensors.push((name.to_owned(), Dtype::F32, vec![1], vec![0; 4]));
        assert_mentions(&fixture.refusal(), &[&format!("tensor \"{name}\" is not a LoRA A or B of q, k, v, o, gate, up or down: "), hint]);
    }

    let mut fixture = Fixture::new("peft-half");
    fixture.tensors.retain(|t| t.0 != Q_B);
    assert_mentions(
        &fixture.refusal(),
        &["tensor \"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\" has no partner \"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\""],
    );

    let mut fixture = Fixture::new("peft-one-target-gone");
    fixture.tensors.retain(|t| !t.0.contains("up_proj"));
    assert_mentions(&fixture.refusal(), &["target_modules in adapter_config.json lists up_proj, but this file holds no up_proj weights"]);

    let mut fixture = Fixture::new("peft-nan");
    fixture.tensor(Q_B).3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_mentions(&fixture.refusal(), &["holds NaN at element 2: the adapter is damaged"]);

    let mut fixture = Fixture::new("peft-int");
    let q_b = fixture.tensor(Q_B);
    q_b.1 = Dtype::I32;
    assert_mentions(&fixture.refusal(), &["has dtype I32, which cannot be read as f32"]);
}

#[test]
fn missing_foreign_and_damaged_files_are_refused() {
    let fixture = Fixture::new("peft-files");
    let dims = &fixture.dims;
    let config_path = fixture.dir.join(PEFT_CONFIG_FILE);
    let weights_path = fixture.dir.join(PEFT_WEIGHTS_FILE);
    let config = std::fs::read(&config_path).unwrap();

    std::fs::write(&config_path, "{\"peft_type\": \"LORA\", ").unwrap();
    assert_mentions(&message(load_peft(fixture.dir.path(), dims).unwrap_err()), &["adapter_config.json: not a JSON object (EOF while parsing"]);
    std::fs::write(&config_path, "[1, 2]").unwrap();
    assert_mentions(&message(load_peft(fixture.dir.path(), dims).unwrap_err()), &["not a JSON object (it is [1,2])"]);

    std::fs::remove_file(&config_path).unwrap();
    assert_mentions(
        &message(load_peft(fixture.dir.path(), dims).unwrap_err()),
        &["adapter_config.json: no such file: a PEFT adapter is a directory holding"],
    );
    std::fs::write(&config_path, &config).unwrap();

    let weights = std::fs::read(&weights_path).unwrap();
    std::fs::write(&weights_path, &weights[..weights.len() - 3]).unwrap();
    assert_mentions(&message(load(&weights_path, dims).unwrap_err()), &["adapter_model.safetensors: ", "the file is truncated"]);

    std::fs::remove_file(&weights_path).unwrap();
    std::fs::write(fixture.dir.join("adapter_model.bin"), b"pickle").unwrap();
    assert_mentions(
        &message(load_peft(fixture.dir.path(), dims).unwrap_err()),
        &["adapter_model.safetensors: no such file: there is an adapter_model.bin (a pickle)"],
    );
}

#[test]
fn every_truncation_of_either_file_is_an_error() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(1, 2.0, false, &[Target::K]), 6);
    let dir = TempDir::new("peft-truncated");
    save_peft(&adapter, &dims, dir.path(), "tiny").unwrap();
    let config = std::fs::read(dir.join(PEFT_CONFIG_FILE)).unwrap();
    let weights = std::fs::read(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    for cut in 0..weights.len() {
        let error = train::adapter::load_peft_bytes(&config, weights[..cut].to_vec(), &dims).unwrap_err();
        assert!(!error.to_string().is_empty());
    }
    for cut in 0..config.len() {
        let error = train::adapter::load_peft_bytes(&config[..cut], weights.clone(), &dims).unwrap_err();
        message(error);
    }
    assert_eq!(train::adapter::load_peft_bytes(&config, weights, &dims).unwrap(), adapter);
}

#[test]
fn an_adapter_that_does_not_fit_the_model_is_not_written() {
    let dims = tiny_dims();
    let adapter = random_adapter(&dims, config(2, 4.0, false, &[Target::Q]), 1);
    let dir = TempDir::new("peft-save-refused");
    let other = ModelDims { d: 16, ..tiny_dims() };
    let error = message(save_peft(&adapter, &other, dir.join("out"), "tiny").unwrap_err());
    assert_eq!(error, "cannot save the adapter: layer 0 q is (out 8, in 8), expected (out 8, in 16)");
    assert!(!dir.join("out").exists(), "nothing is written");
    let mut dropping = adapter;
    dropping.config.dropout = 1.0;
    assert_mentions(&message(save_peft(&dropping, &dims, dir.join("out"), "tiny").unwrap_err()), &["dropout 1 is outside [0, 1)"]);
}
