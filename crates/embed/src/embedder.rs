//! Texts in, sentence vectors out: tokenizer, truncation, flat batches, the encoder, pooling and
//! normalization of a sentence-transformers folder.

use std::path::Path;

use kernels::{Level, ThreadPool};
use tokenizer::hf::HfTokenizer;

use crate::config::Pipeline;
use crate::pooling::l2_normalize;
use crate::{Bert, BertConfig, EmbedError, Pooling, Precision};

/// Tokens per forward call at most: bounds the work buffers (T x (6D + F) floats with the
/// output, 63 MB for MiniLM at 4096) while keeping every matrix product many tokens tall. A text is never split;
/// one text longer than this (possible only with a large `max_seq_length`) runs alone.
pub const TOKEN_BUDGET: usize = 4096;

/// A sentence embedding model loaded from a sentence-transformers folder.
#[derive(Clone, Debug)]
pub struct SentenceEmbedder {
    tokenizer: HfTokenizer,
    bert: Bert,
    pooling: Pooling,
    normalize: bool,
    lowercase: bool,
    /// Tokens per text at most, special tokens included.
    max_seq_length: usize,
    /// The special tokens the post-processor puts before and after a text ([CLS] and [SEP]).
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl SentenceEmbedder {
    /// Loads the folder `dir`: modules.json, the encoder's config.json, model.safetensors and
    /// tokenizer.json, sentence_bert_config.json when present, and the Pooling module's config;
    /// the linear layers in the precision [`Precision::auto`] chooses for this machine.
    pub fn load(dir: &Path) -> Result<SentenceEmbedder, EmbedError> {
        SentenceEmbedder::load_with(dir, Precision::auto())
    }

    /// [`Self::load`] with the linear layers in `precision`.
    pub fn load_with(dir: &Path, precision: Precision) -> Result<SentenceEmbedder, EmbedError> {
        let pipeline = Pipeline::load(dir)?;
        let tdir = &pipeline.transformer_dir;
        let config_path = tdir.join("config.json");
        let config = BertConfig::load(&config_path)?;
        let tokenizer_path = tdir.join("tokenizer.json");
        let json = std::fs::read(&tokenizer_path).map_err(|cause| EmbedError::Io { path: tokenizer_path.clone(), cause })?;
        let tokenizer = HfTokenizer::from_json(&json).map_err(|cause| EmbedError::Tokenizer { path: tokenizer_path.clone(), cause })?;
        let (prefix, suffix) = special_frame(&tokenizer).ok_or_else(|| EmbedError::Unsupported {
            path: tokenizer_path.clone(),
            what: "post_processor: it does not wrap a text in fixed special tokens".into(),
        })?;
        // sentence-transformers caps max_seq_length at the position table; without one it uses
        // the table's size.
        let max_seq_length = pipeline.max_seq_length.unwrap_or(config.max_position_embeddings).min(config.max_position_embeddings);
        if max_seq_length <= prefix.len() + suffix.len() {
            let message = format!("max_seq_length {max_seq_length} leaves no room for text between {} special tokens", prefix.len() + suffix.len());
            return Err(EmbedError::Config { path: tdir.join("sentence_bert_config.json"), message });
        }
        let bert = Bert::load(&tdir.join("model.safetensors"), config, precision)?;
        Ok(SentenceEmbedder {
            tokenizer,
            bert,
            pooling: pipeline.pooling,
            normalize: pipeline.normalize,
            lowercase: pipeline.lowercase,
            max_seq_length,
            prefix,
            suffix,
        })
    }

    /// D, the length of an embedding.
    pub fn dim(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// Tokens per text at most, special tokens included (longer texts are cut).
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The pooling the folder asks for.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether embeddings are normalized to unit length.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The encoder.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.tokenizer
    }

    /// The token ids the model sees for `text`: its word pieces, cut to leave room for the
    /// special tokens within `max_seq_length`, between [CLS] and [SEP]. Truncation keeps the
    /// start of the text, as Hugging Face's `longest_first` does for one text.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let lowered;
        let text = match self.lowercase {
            true => {
                lowered = text.to_lowercase();
                lowered.as_str()
            }
            false => text,
        };
        let pieces = self.tokenizer.encode(text, false);
        let room = self.max_seq_length - self.prefix.len() - self.suffix.len();
        let mut ids = Vec::with_capacity(pieces.len().min(room) + self.prefix.len() + self.suffix.len());
        ids.extend_from_slice(&self.prefix);
        ids.extend_from_slice(&pieces[..pieces.len().min(room)]);
        ids.extend_from_slice(&self.suffix);
        ids
    }

    /// Embeddings (N, D) of `texts`, one row per text in order, at the machine's kernel level.
    pub fn embed(&self, pool: &ThreadPool, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let sequences: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect();
        self.embed_ids(pool, Level::current(), &sequences, TOKEN_BUDGET)
    }

    /// Embeddings of already tokenized sequences (special tokens included, as [`Self::tokenize`]
    /// gives them), in flat batches of at most `token_budget` tokens (a longer sequence runs
    /// alone). The result does not depend on the budget, the level or the thread count: each
    /// sequence gets the bits it gets alone.
    pub fn embed_ids(&self, pool: &ThreadPool, level: Level, sequences: &[Vec<u32>], token_budget: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let d = self.dim();
        let mut out = Vec::with_capacity(sequences.len());
        let mut hidden = Vec::new();
        let mut first = 0;
        while first < sequences.len() {
            // The next batch: sequences in input order while they fit the budget (at least one).
            // A flat batch holds no padding, so the order of the texts costs nothing.
            let mut end = first + 1;
            let mut tokens = sequences[first].len();
            while end < sequences.len() && tokens + sequences[end].len() <= token_budget {
                tokens += sequences[end].len();
                end += 1;
            }
            let batch = &sequences[first..end];
            let mut seq_starts = Vec::with_capacity(batch.len() + 1);
            seq_starts.push(0);
            for s in batch {
                seq_starts.push(seq_starts.last().copied().unwrap_or(0) + s.len());
            }
            let ids: Vec<u32> = batch.concat();
            hidden.resize(ids.len() * d, 0.0);
            self.bert.forward(pool, level, &ids, &seq_starts, &mut hidden).map_err(|e| renumber(e, first))?;
            for w in seq_starts.windows(2) {
                let mut pooled = vec![0f32; d];
                self.pooling.pool(&hidden[w[0] * d..w[1] * d], d, &mut pooled);
                if self.normalize {
                    let mut unit = vec![0f32; d];
                    l2_normalize(&pooled, &mut unit);
                    pooled = unit;
                }
                out.push(pooled);
            }
            first = end;
        }
        Ok(out)
    }
}

/// An error about sequence i of a batch that starts at `first`, renumbered to the caller's index.
fn renumber(e: EmbedError, first: usize) -> EmbedError {
    match e {
        EmbedError::TokenId { sequence, id, vocab } => EmbedError::TokenId { sequence: sequence + first, id, vocab },
        EmbedError::TooLong { sequence, len, max } => EmbedError::TooLong { sequence: sequence + first, len, max },
        other => other,
    }
}

/// The special tokens the post-processor puts around a text, found by encoding a probe with and
/// without them: `with == prefix ++ without ++ suffix`. None when the post-processor does
/// something else (or the probe is not one token).
fn special_frame(tokenizer: &HfTokenizer) -> Option<(Vec<u32>, Vec<u32>)> {
    let with = tokenizer.encode("a", true);
    let without = tokenizer.encode("a", false);
    if without.is_empty() || with.len() < without.len() {
        return None;
    }
    let at = (0..=with.len() - without.len()).find(|&i| with[i..i + without.len()] == without[..])?;
    let (prefix, suffix) = (with[..at].to_vec(), with[at + without.len()..].to_vec());
    // The frame must not depend on the text: check it on a second, longer probe.
    let probe = tokenizer.encode("b c", false);
    let framed: Vec<u32> = prefix.iter().chain(&probe).chain(&suffix).copied().collect();
    (tokenizer.encode("b c", true) == framed).then_some((prefix, suffix))
}
