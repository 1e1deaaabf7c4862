//! The configuration files of a sentence-transformers folder:
//!
//! ```text
//! modules.json                 [Transformer (path ""), Pooling (path "1_Pooling"), Normalize]
//! config.json                  the BERT encoder (Hugging Face `BertConfig`)
//! sentence_bert_config.json    {"max_seq_length": 256, "do_lower_case": false}   (optional)
//! 1_Pooling/config.json        {"pooling_mode_mean_tokens": true, ...}
//! ```
//!
//! Each is validated here once, so the forward pass can trust its sizes. Unknown keys are
//! ignored; values this crate cannot run (another activation, max pooling, a Dense module) are
//! [`EmbedError::Unsupported`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::EmbedError;
use crate::Pooling;

/// Reads and parses one JSON file.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EmbedError> {
    let bytes = std::fs::read(path).map_err(|cause| EmbedError::Io { path: path.to_path_buf(), cause })?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::Json { path: path.to_path_buf(), message: e.to_string() })
}

/// A BERT encoder's hyper-parameters (the fields of Hugging Face's config.json that matter).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// V, word pieces in the vocabulary.
    pub vocab_size: usize,
    /// D, the model width.
    pub hidden_size: usize,
    /// L, encoder layers.
    pub num_hidden_layers: usize,
    /// H, attention heads (Dh = D / H).
    pub num_attention_heads: usize,
    /// F, the FFN width.
    pub intermediate_size: usize,
    /// P, rows of the position table: the longest sequence the model takes.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (2 for BERT: sentence A and B).
    pub type_vocab_size: usize,
    /// The eps of every LayerNorm (1e-12 for BERT).
    pub layer_norm_eps: f64,
    /// The FFN activation; only "gelu" (the erf form) is implemented.
    pub hidden_act: String,
    /// Only "absolute" (learned position embeddings).
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".to_string()
}

impl BertConfig {
    /// Reads `config.json` and checks that it describes a BERT this crate runs.
    pub fn load(path: &Path) -> Result<BertConfig, EmbedError> {
        let config: BertConfig = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Dh, the width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    fn validate(&self, path: &Path) -> Result<(), EmbedError> {
        let invalid = |message: String| Err(EmbedError::Config { path: path.to_path_buf(), message });
        let unsupported = |what: String| Err(EmbedError::Unsupported { path: path.to_path_buf(), what });
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return invalid(format!("{name} is 0"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return invalid(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return invalid(format!("layer_norm_eps {} is not a finite non-negative number", self.layer_norm_eps));
        }
        if self.hidden_act != "gelu" {
            return unsupported(format!("hidden_act {:?} (only \"gelu\", the erf form, is implemented)", self.hidden_act));
        }
        if self.position_embedding_type != "absolute" {
            return unsupported(format!("position_embedding_type {:?} (only \"absolute\")", self.position_embedding_type));
        }
        Ok(())
    }
}

/// One entry of modules.json.
#[derive(Clone, Debug, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The pipeline of a sentence-transformers folder: where the encoder is, how its token states
/// become one vector, and whether that vector is normalized.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The Transformer module's folder (the model folder itself, usually).
    pub transformer_dir: PathBuf,
    /// Mean or CLS pooling (from the Pooling module's config.json).
    pub pooling: Pooling,
    /// Whether a Normalize module follows: unit L2 length.
    pub normalize: bool,
    /// Word pieces per text, [CLS] and [SEP] included; longer texts are cut (from
    /// sentence_bert_config.json; the position table's size when absent).
    pub max_seq_length: Option<usize>,
    /// Lowercase texts before tokenizing (sentence_bert_config.json's `do_lower_case`).
    pub lowercase: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// The Pooling module's config.json. Newer sentence-transformers versions add more modes, all
/// refused unless false.
#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl Pipeline {
    /// Reads modules.json in `dir` and the configs it points to. The modules must be a
    /// Transformer, then a Pooling, then optionally a Normalize.
    pub fn load(dir: &Path) -> Result<Pipeline, EmbedError> {
        let modules_path = dir.join("modules.json");
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        // "sentence_transformers.models.Pooling" or, in newer versions, another module path.
        let kinds: Vec<&str> = modules.iter().map(|m| m.kind.rsplit('.').next().unwrap_or_default()).collect();
        let (transformer, pooling, normalize) = match kinds.as_slice() {
            ["Transformer", "Pooling"] => (&modules[0], &modules[1], false),
            ["Transformer", "Pooling", "Normalize"] => (&modules[0], &modules[1], true),
            _ => {
                let list: Vec<&str> = modules.iter().map(|m| m.kind.as_str()).collect();
                let what = format!("module list {list:?} (expected Transformer, Pooling and optionally Normalize)");
                return Err(EmbedError::Unsupported { path: modules_path, what });
            }
        };
        let transformer_dir = dir.join(&transformer.path);
        let pooling_path = dir.join(&pooling.path).join("config.json");
        let pooling = Pooling::from_config(&pooling_path, read_json(&pooling_path)?)?;
        let sbert_path = transformer_dir.join("sentence_bert_config.json");
        let (max_seq_length, lowercase) = match sbert_path.is_file() {
            true => {
                let sbert: SentenceBertConfig = read_json(&sbert_path)?;
                (sbert.max_seq_length, sbert.do_lower_case)
            }
            false => (None, false),
        };
        Ok(Pipeline { transformer_dir, pooling, normalize, max_seq_length, lowercase })
    }
}

impl Pooling {
    fn from_config(path: &Path, c: PoolingConfig) -> Result<Pooling, EmbedError> {
        let others = [
            ("pooling_mode_max_tokens", c.pooling_mode_max_tokens),
            ("pooling_mode_mean_sqrt_len_tokens", c.pooling_mode_mean_sqrt_len_tokens),
            ("pooling_mode_weightedmean_tokens", c.pooling_mode_weightedmean_tokens),
            ("pooling_mode_lasttoken", c.pooling_mode_lasttoken),
        ];
        if let Some((name, _)) = others.iter().find(|(_, on)| *on) {
            return Err(EmbedError::Unsupported { path: path.to_path_buf(), what: format!("pooling: {name} (only mean and CLS pooling)") });
        }
        match (c.pooling_mode_mean_tokens, c.pooling_mode_cls_token) {
            (true, false) => Ok(Pooling::Mean),
            (false, true) => Ok(Pooling::Cls),
            (true, true) => Err(EmbedError::Unsupported { path: path.to_path_buf(), what: "pooling: mean and CLS together (concatenated)".into() }),
            (false, false) => Err(EmbedError::Config { path: path.to_path_buf(), message: "no pooling mode is on".into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const MODULES: &str = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
        {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#;

    #[test]
    fn minilm_pipeline_is_mean_then_normalize() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#,
        );
        write(dir.path(), "sentence_bert_config.json", r#"{"max_seq_length": 256, "do_lower_case": false}"#);
        let p = Pipeline::load(dir.path()).unwrap();
        assert_eq!((p.pooling, p.normalize, p.max_seq_length, p.lowercase), (Pooling::Mean, true, Some(256), false));
    }

    #[test]
    fn unsupported_pipelines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", &MODULES.replace("models.Normalize", "models.Dense"));
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_mean_tokens": true}"#);
        let err = Pipeline::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.json") && err.contains("Dense"), "{err}");

        write(dir.path(), "modules.json", MODULES);
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_max_tokens": true}"#);
        let err = Pipeline::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("pooling_mode_max_tokens"), "{err}");

        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_cls_token": true}"#);
        assert_eq!(Pipeline::load(dir.path()).unwrap().pooling, Pooling::Cls);

        std::fs::remove_file(dir.path().join("1_Pooling/config.json")).unwrap();
        let err = Pipeline::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1_Pooling") && err.contains("config.json"), "{err}");
    }

    #[test]
    fn bert_config_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let base = serde_json::json!({"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
            "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"});
        let path = dir.path().join("config.json");
        std::fs::write(&path, base.to_string()).unwrap();
        let c = BertConfig::load(&path).unwrap();
        assert_eq!((c.head_dim(), c.layer_norm_eps), (32, 1e-12));
        for (key, value, needle) in [
            ("hidden_act", serde_json::json!("gelu_new"), "gelu_new"),
            ("num_attention_heads", serde_json::json!(7), "multiple"),
            ("hidden_size", serde_json::json!(0), "hidden_size is 0"),
            ("position_embedding_type", serde_json::json!("relative_key"), "relative_key"),
            ("layer_norm_eps", serde_json::json!(-1.0), "layer_norm_eps"),
            ("vocab_size", serde_json::json!("many"), "\"many\""),
        ] {
            let mut c = base.clone();
            c[key] = value;
            std::fs::write(&path, c.to_string()).unwrap();
            let err = BertConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("config.json"), "{key}: {err}");
        }
    }
}
