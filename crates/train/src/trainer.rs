//! One optimizer step at a time: forward and backward over a step's micro-batches (gradient
//! accumulation), clipping, AdamW; evaluation; and checkpoints that resume to the same bits.

use crate::lora::{LoraConfig, Target};
use crate::model::{Activations, Batch, LoraParams, TrainModel};
use crate::optim::{clip_grad_norm, AdamState, AdamW};
use safetensors_file::{serialize, Dtype, SafeTensors};
use std::path::Path;

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean negative log-likelihood over the step's scored rows.
    pub loss: f64,
    /// Scored rows.
    pub scored: usize,
    /// Tokens run through the model.
    pub tokens: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// The parameters, the optimizer and the buffers of a training run.
pub struct Trainer<'m> {
    /// The frozen model.
    pub model: &'m TrainModel<f32>,
    /// The adapter being trained.
    pub params: LoraParams<f32>,
    /// AdamW's settings.
    pub opt: AdamW,
    /// AdamW's moments.
    pub state: AdamState,
    acts: Activations<f32>,
    grads: Vec<f32>,
}

impl<'m> Trainer<'m> {
    /// Training `params` on `model`.
    pub fn new(model: &'m TrainModel<f32>, params: LoraParams<f32>, opt: AdamW) -> Trainer<'m> {
        let n = params.values.len();
        Trainer { model, params, opt, state: AdamState::new(n), acts: Activations::default(), grads: vec![0.0; n] }
    }

    /// One optimizer step over `micro` (the gradient of the mean loss over all their scored rows),
    /// clipped to `max_grad_norm` if given, at learning rate `lr`. `dropout_seed` draws the
    /// dropout masks (micro-batch i uses seed + i). A step with nothing scored changes nothing.
    pub fn step(&mut self, micro: &[Batch], lr: f64, max_grad_norm: Option<f64>, dropout_seed: u64) -> StepStats {
        let scored: usize = micro.iter().map(|b| b.scored().len()).sum();
        let tokens = micro.iter().map(|b| b.tokens.len()).sum();
        if scored == 0 {
            return StepStats { loss: 0.0, scored, tokens, grad_norm: 0.0 };
        }
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        let mut nll = 0.0;
        for (i, batch) in micro.iter().enumerate() {
            self.model.forward(&self.params, batch, &mut self.acts, Some(dropout_seed.wrapping_add(i as u64)));
            nll += self.model.loss_backward(&self.params, batch, &self.acts, 1.0 / scored as f64, Some(&mut self.grads)).nll;
        }
        let grad_norm = match max_grad_norm {
            Some(max) => clip_grad_norm(&mut self.grads, max),
            None => self.grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt(),
        };
        self.opt.step(&mut self.state, lr, &mut self.params.values, &self.grads);
        StepStats { loss: nll / scored as f64, scored, tokens, grad_norm }
    }

    /// Mean loss over the scored rows of `batches` (no dropout, no gradient); None when nothing
    /// is scored.
    pub fn eval_loss(&mut self, batches: &[Batch]) -> Option<f64> {
        let (mut nll, mut count) = (0.0, 0);
        for b in batches {
            self.model.forward(&self.params, b, &mut self.acts, None);
            let l = self.model.loss_backward(&self.params, b, &self.acts, 1.0, None);
            nll += l.nll;
            count += l.count;
        }
        (count > 0).then(|| nll / count as f64)
    }
}

/// The file names inside a checkpoint directory.
const STATE_FILE: &str = "state.safetensors";
const META_FILE: &str = "checkpoint.json";

/// A checkpoint's description: the adapter's shape and where the run stood, plus whatever the
/// caller keeps (`extra`: its settings and position in the data, compared when resuming).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps done.
    pub step: usize,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha.
    pub alpha: f32,
    /// rsLoRA scaling.
    pub rslora: bool,
    /// Dropout.
    pub dropout: f32,
    /// Adapted targets (short names).
    pub targets: Vec<String>,
    /// AdamW's step count.
    pub adam_t: u64,
    /// The caller's own state.
    pub extra: serde_json::Value,
}

/// Errors of checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint {path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        err: std::io::Error,
    },
    /// The files are not a checkpoint of this run.
    #[error("checkpoint {path}: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Trainer<'_> {
    /// Writes the parameters, AdamW's moments and `meta` to `dir` (created if needed); the
    /// files are written under temporary names and renamed, so an interrupted save leaves the
    /// previous checkpoint whole.
    pub fn save_checkpoint(&self, dir: &Path, step: usize, extra: serde_json::Value) -> Result<(), CheckpointError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |err| CheckpointError::Io { path: path.clone(), err }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let c = &self.params.config;
        let meta = CheckpointMeta {
            step,
            rank: c.rank,
            alpha: c.alpha,
            rslora: c.rslora,
            dropout: c.dropout,
            targets: c.targets.iter().map(|t| t.short_name().to_string()).collect(),
            adam_t: self.state.t,
            extra,
        };
        let n = self.params.values.len() as u64;
        let (pv, pm, pvv) = (f32_bytes(&self.params.values), f32_bytes(&self.state.m), f32_bytes(&self.state.v));
        let bytes = serialize(&[("values", Dtype::F32, &[n], &pv), ("adam_m", Dtype::F32, &[n], &pm), ("adam_v", Dtype::F32, &[n], &pvv)], &[])
            .map_err(|e| CheckpointError::Invalid { path: dir.display().to_string(), why: e.to_string() })?;
        let state_path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        let meta_tmp = dir.join(format!("{META_FILE}.tmp"));
        let json = serde_json::to_string_pretty(&meta).map_err(|e| CheckpointError::Invalid { path: META_FILE.into(), why: e.to_string() })?;
        std::fs::write(&meta_tmp, json).map_err(io(&meta_tmp))?;
        std::fs::rename(&tmp, &state_path).map_err(io(&state_path))?;
        std::fs::rename(&meta_tmp, dir.join(META_FILE)).map_err(io(dir))?;
        Ok(())
    }

    /// Restores parameters and moments from `dir`, which must hold a checkpoint of an adapter
    /// shaped like this one; returns its description.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<CheckpointMeta, CheckpointError> {
        let meta_path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).map_err(|err| CheckpointError::Io { path: meta_path.display().to_string(), err })?;
        let invalid = |why: String| CheckpointError::Invalid { path: dir.display().to_string(), why };
        let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| invalid(format!("{META_FILE}: {e}")))?;
        let c = &self.params.config;
        let targets: Vec<Option<Target>> = meta.targets.iter().map(|t| Target::parse(t)).collect();
        let same = LoraConfig {
            rank: meta.rank,
            alpha: meta.alpha,
            rslora: meta.rslora,
            dropout: meta.dropout,
            targets: targets.iter().flatten().copied().collect(),
        };
        if &same != c || targets.iter().any(|t| t.is_none()) {
            return Err(invalid(format!(
                "it was made with rank {}, alpha {}, dropout {}, targets {} (this run: rank {}, alpha {}, dropout {}, targets {}); resume with the same settings",
                meta.rank,
                meta.alpha,
                meta.dropout,
                meta.targets.join(","),
                c.rank,
                c.alpha,
                c.dropout,
                c.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>().join(",")
            )));
        }
        let file = SafeTensors::open(dir.join(STATE_FILE)).map_err(|e| invalid(e.to_string()))?;
        let n = self.params.values.len();
        let read = |name: &str| -> Result<Vec<f32>, CheckpointError> {
            let v = file.to_f32_vec(name).map_err(|e| invalid(e.to_string()))?;
            if v.len() != n {
                return Err(invalid(format!("{name} holds {} values, this adapter has {n}", v.len())));
            }
            Ok(v)
        };
        let (values, m, v) = (read("values")?, read("adam_m")?, read("adam_v")?);
        self.params.values = values;
        self.state = AdamState { m, v, t: meta.adam_t };
        Ok(meta)
    }
}
