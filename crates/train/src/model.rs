//! The training forward and backward of a Llama model with LoRA adapters over its frozen weights.
//!
//! ```text
//! x = embd[tok]                                        (frozen: no gradient)
//! per block:  xn = rms(x) w1;  q, k, v = lin(xn);  q, k = rope(q, k)
//!             h = x + lin_o(attn(q, k, v))
//!             hn = rms(h) w2;  x = h + lin_down(silu(lin_gate(hn)) * lin_up(hn))
//! logits = rms(x) wout . E^T                           (rows with a label only, in chunks)
//! lin(x) = x W^T + scaling (dropout(x) A^T) B^T        (W frozen; A, B trained where adapted)
//! ```
//!
//! The forward keeps, per block, the inputs every backward function needs (`Saved`); the
//! backward walks the blocks in reverse and adds the gradient of every A and B into one flat
//! vector laid out like [`LoraParams::values`]. Frozen matrices are dequantized once at load and
//! kept in both orientations, W for the forward and W^T for the input gradient, in the form
//! [`Real::prepare`] makes (packed panels for f32, or Q8_0 blocks: [`FrozenFormat`]).

use crate::lora::{Adapter, LoraConfig, LoraPair, Target};
use crate::ops::{self, AttnShape};
use crate::real::{FrozenFormat, Real};
use kernels::loss::IGNORE_INDEX;
use kernels::pool::SharedMut;
use kernels::{Level, ThreadPool};
use model::{Llama, LlamaConfig, ModelError};
use std::ops::Range;
use std::sync::Arc;

/// A frozen linear map W (out, in), ready for products in both directions.
pub struct Frozen<F: Real> {
    fwd: F::Mat,
    bwd: F::Mat,
    n_in: usize,
}

impl<F: Real> Frozen<F> {
    /// From W (out, in) row-major, its products in `format` (see [`FrozenFormat`]).
    pub fn new(w: &[f32], n_out: usize, n_in: usize, format: FrozenFormat, level: Level) -> Frozen<F> {
        let t = ops::transpose(w, n_out, n_in);
        Frozen { fwd: F::prepare(w, n_out, n_in, format, level), bwd: F::prepare(&t, n_in, n_out, format, level), n_in }
    }
}

struct LayerWeights<F: Real> {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    maps: [Frozen<F>; 7],
}

/// A model for training: frozen weights in F, and the sizes.
pub struct TrainModel<F: Real> {
    /// The sizes (and RoPE base, norm epsilon) of the model.
    pub config: LlamaConfig,
    embd: Vec<f32>,
    head: Frozen<F>,
    output_norm: Vec<f32>,
    layers: Vec<LayerWeights<F>>,
    pool: Arc<ThreadPool>,
    level: Level,
}

/// Where one adapted map's A and B lie in the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// A (r, in).
    pub a: Range<usize>,
    /// B (out, r).
    pub b: Range<usize>,
    /// in.
    pub n_in: usize,
    /// out.
    pub n_out: usize,
}

/// The trainable parameters: every A and B, one after another in one vector (layer by layer,
/// targets in [`Target::ALL`] order, A before B), so that the optimizer, clipping and checkpoints
/// see one array.
#[derive(Clone, Debug)]
pub struct LoraParams<F: Real> {
    /// Rank, alpha, targets.
    pub config: LoraConfig,
    /// All values.
    pub values: Vec<F>,
    /// (L) x (7) slots, None where the target is not adapted.
    pub slots: Vec<[Option<Slot>; 7]>,
}

impl<F: Real> LoraParams<F> {
    /// The layout for `config` on a model of `cfg`'s sizes, all zero.
    pub fn zeros(config: &LoraConfig, cfg: &LlamaConfig) -> LoraParams<F> {
        LoraParams::zeros_where(config, cfg, &|_, _| true)
    }

    /// The layout for `config` with a pair only where `present(layer, target)` (adapters that
    /// adapt some layers only, as PEFT's `layers_to_transform`), all zero.
    pub fn zeros_where(config: &LoraConfig, cfg: &LlamaConfig, present: &dyn Fn(usize, Target) -> bool) -> LoraParams<F> {
        let (d, qd, kvd, f) = (cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff);
        let mut at = 0;
        let mut slots = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let layer: [Option<Slot>; 7] = std::array::from_fn(|i| {
                let target = Target::ALL[i];
                if !config.targets.contains(&target) || !present(l, target) {
                    return None;
                }
                let (n_out, n_in) = target.shape(d, qd, kvd, f);
                let a = at..at + config.rank * n_in;
                let b = a.end..a.end + n_out * config.rank;
                at = b.end;
                Some(Slot { a, b, n_in, n_out })
            });
            slots.push(layer);
        }
        LoraParams { config: config.clone(), values: vec![F::ZERO; at], slots }
    }

    /// Fresh parameters: A kaiming-uniform with a = sqrt(5) (uniform in +-1/sqrt(in), as
    /// PyTorch's `nn.Linear` and PEFT initialise it), B zero, from `seed`.
    pub fn init(config: &LoraConfig, cfg: &LlamaConfig, seed: u64) -> LoraParams<F> {
        let mut p = LoraParams::zeros(config, cfg);
        let mut rng = crate::rng::Rng::new(seed);
        for slot in p.slots.iter().flatten().flatten() {
            let bound = 1.0 / (slot.n_in as f64).sqrt();
            for v in &mut p.values[slot.a.clone()] {
                *v = F::from_f64((rng.uniform() * 2.0 - 1.0) * bound);
            }
        }
        p
    }

    /// The parameters as an [`Adapter`] (f32).
    pub fn to_adapter(&self) -> Adapter {
        let layers = self
            .slots
            .iter()
            .map(|layer| {
                std::array::from_fn(|i| {
                    layer[i].as_ref().map(|s| LoraPair {
                        a: self.values[s.a.clone()].iter().map(|v| v.to_f64() as f32).collect(),
                        b: self.values[s.b.clone()].iter().map(|v| v.to_f64() as f32).collect(),
                        n_in: s.n_in,
                        n_out: s.n_out,
                    })
                })
            })
            .collect();
        Adapter { config: self.config.clone(), layers }
    }

    /// Parameters from an adapter made for a model of `cfg`'s sizes.
    pub fn from_adapter(adapter: &Adapter, cfg: &LlamaConfig) -> Result<LoraParams<F>, String> {
        if adapter.layers.len() != cfg.n_layer {
            return Err(format!("the adapter has {} layers, the model {}", adapter.layers.len(), cfg.n_layer));
        }
        let mut p = LoraParams::zeros_where(&adapter.config, cfg, &|l, t| adapter.layers[l][t.index()].is_some());
        for (l, (slots, pairs)) in p.slots.iter().zip(&adapter.layers).enumerate() {
            for (i, (slot, pair)) in slots.iter().zip(pairs).enumerate() {
                match (slot, pair) {
                    (Some(s), Some(pair)) if pair.a.len() == s.a.len() && pair.b.len() == s.b.len() => {
                        for (d, &v) in p.values[s.a.clone()].iter_mut().zip(&pair.a) {
                            *d = F::from_f32(v);
                        }
                        for (d, &v) in p.values[s.b.clone()].iter_mut().zip(&pair.b) {
                            *d = F::from_f32(v);
                        }
                    }
                    (None, None) => {}
                    _ => return Err(format!("layer {l}, {}: the adapter's matrices do not fit the model", Target::ALL[i].short_name())),
                }
            }
        }
        Ok(p)
    }
}

/// One training batch: sequences one after another in a flat row of tokens.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// (N) token ids.
    pub tokens: Vec<u32>,
    /// (N) labels aligned with the tokens: row t of a sequence is scored against the label of
    /// row t + 1 of the same sequence, unless it is -100.
    pub labels: Vec<i64>,
    /// Each sequence's rows.
    pub seqs: Vec<Range<usize>>,
}

impl Batch {
    /// Rows scored: (row, target) for every row whose next row in its sequence has a label.
    pub fn scored(&self) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        for s in &self.seqs {
            for r in s.start..s.end.saturating_sub(1) {
                let l = self.labels[r + 1];
                if l != IGNORE_INDEX {
                    out.push((r, l as u32));
                }
            }
        }
        out
    }
}

/// What one block's backward needs from its forward.
#[derive(Default)]
struct Saved<F> {
    x: Vec<F>,
    rstd1: Vec<F>,
    xn1: Vec<F>,
    q: Vec<F>,
    k: Vec<F>,
    v: Vec<F>,
    probs: Vec<F>,
    o: Vec<F>,
    h: Vec<F>,
    rstd2: Vec<F>,
    xn2: Vec<F>,
    g: Vec<F>,
    u: Vec<F>,
    a: Vec<F>,
    /// Per target, the LoRA path's u (N, r).
    lora_u: [Vec<F>; 7],
    /// Per target, dropout's mask of its input (empty without dropout).
    masks: [Vec<F>; 7],
}

/// The forward's kept activations, reused from step to step.
pub struct Activations<F> {
    layers: Vec<Saved<F>>,
    x_final: Vec<F>,
    rstd_final: Vec<F>,
    xn_final: Vec<F>,
    cos_sin: Vec<(f32, f32)>,
}

impl<F: Real> Default for Activations<F> {
    fn default() -> Self {
        Activations { layers: Vec::new(), x_final: Vec::new(), rstd_final: Vec::new(), xn_final: Vec::new(), cos_sin: Vec::new() }
    }
}

/// A batch's loss: the sum of the negative log-likelihoods of its scored rows, and their count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSum {
    /// Sum over scored rows of -log p(target).
    pub nll: f64,
    /// Scored rows.
    pub count: usize,
}

/// Bytes of logits computed at a time: (rows, V) f32, rows a multiple of 32 between 32 and 1024
/// (256 rows for a vocabulary of 49,152). Every chunk streams the whole head (V x D weights) past
/// its rows, so larger chunks read it fewer times: 32 rows at a time read SmolLM2's 56 MB bf16
/// head 64 times a step of 1,024 tokens.
const HEAD_BYTES: usize = 48 << 20;

/// Rows of logits per chunk for a vocabulary of `v` (see [`HEAD_BYTES`]).
fn head_rows(v: usize) -> usize {
    (HEAD_BYTES / (v.max(1) * 4)).clamp(32, 1024) / 32 * 32
}

/// Gives `v` the length n for an output that the next call writes whole (every caller's does):
/// zeroed when the length changes, left as it is otherwise, so that a step of the same shape as
/// the last one spends no time clearing megabytes of activations on one thread.
fn resize<F: Real>(v: &mut Vec<F>, n: usize) {
    if v.len() != n {
        v.clear();
        v.resize(n, F::ZERO);
    }
}

impl<F: Real> TrainModel<F> {
    /// The frozen weights of `llama`, dequantized, computing on `n_threads` threads at the
    /// machine's best kernel level.
    pub fn from_llama(llama: &Llama, n_threads: usize) -> Result<TrainModel<F>, ModelError> {
        TrainModel::from_llama_as(llama, n_threads, FrozenFormat::F32, Level::current())
    }

    /// [`TrainModel::from_llama`] with the frozen matrices in `format` (f32 only; f64 keeps its
    /// own), for the kernels of `level` (at most [`Level::best_available`]).
    pub fn from_llama_as(llama: &Llama, n_threads: usize, format: FrozenFormat, level: Level) -> Result<TrainModel<F>, ModelError> {
        let config = llama.config.clone();
        let (_, _, embd) = llama.dequantized("token_embd.weight")?;
        let head_name = if llama.file().tensor("output.weight").is_some() { "output.weight" } else { "token_embd.weight" };
        let (hv, hd, head) =
            if head_name == "token_embd.weight" { (config.n_vocab, config.n_embd, embd.clone()) } else { llama.dequantized(head_name)? };
        let (_, _, output_norm) = llama.dequantized("output_norm.weight")?;
        let mut layers = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            let (_, _, attn_norm) = llama.dequantized(&format!("blk.{l}.attn_norm.weight"))?;
            let (_, _, ffn_norm) = llama.dequantized(&format!("blk.{l}.ffn_norm.weight"))?;
            let mut maps = Vec::with_capacity(7);
            for t in Target::ALL {
                let (rows, cols, w) = llama.dequantized(&t.gguf_name(l))?;
                maps.push(Frozen::new(&w, rows, cols, format, level));
            }
            let maps: [Frozen<F>; 7] = match maps.try_into() {
                Ok(m) => m,
                Err(_) => unreachable!("seven targets"),
            };
            layers.push(LayerWeights { attn_norm, ffn_norm, maps });
        }
        let pool = Arc::new(ThreadPool::try_new(n_threads.max(1))?);
        Ok(TrainModel { head: Frozen::new(&head, hv, hd, format, level), config, embd, output_norm, layers, pool, level })
    }

    /// Threads of the pool.
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// [`ops::rms_norm_forward`] over rows of width D, the rows split over the pool.
    fn rms_norm_rows(&self, x: &[F], w: &[f32], y: &mut [F], rstd: &mut [F]) {
        let (d, eps) = (w.len(), self.config.rms_eps);
        let (y, rstd) = (SharedMut::new(y), SharedMut::new(rstd));
        ops::par_rows(&self.pool, x.len() / d, &|r| {
            // SAFETY: each thread writes only its own rows.
            let (y, rstd) = unsafe { (y.slice(r.start * d, r.len() * d), rstd.slice(r.start, r.len())) };
            ops::rms_norm_forward(&x[r.start * d..r.end * d], w, eps, y, rstd)
        });
    }

    /// [`ops::rms_norm_backward_add`] over rows of width D, the rows split over the pool.
    fn rms_norm_backward_rows(&self, dy: &[F], x: &[F], w: &[f32], rstd: &[F], dx: &mut [F]) {
        let d = w.len();
        let dx = SharedMut::new(dx);
        ops::par_rows(&self.pool, x.len() / d, &|r| {
            // SAFETY: each thread writes only its own rows.
            let dx = unsafe { dx.slice(r.start * d, r.len() * d) };
            ops::rms_norm_backward_add(&dy[r.start * d..r.end * d], &x[r.start * d..r.end * d], w, &rstd[r.clone()], dx)
        });
    }

    /// [`ops::swiglu_forward`], the values split over the pool.
    fn swiglu_rows(&self, g: &[F], u: &[F], a: &mut [F]) {
        let a = SharedMut::new(a);
        ops::par_rows(&self.pool, g.len(), &|r| {
            // SAFETY: each thread writes only its own values.
            ops::swiglu_forward(&g[r.clone()], &u[r.clone()], unsafe { a.slice(r.start, r.len()) })
        });
    }

    /// [`ops::swiglu_backward`], the values split over the pool.
    fn swiglu_backward_rows(&self, da: &[F], g: &[F], u: &[F], dg: &mut [F], du: &mut [F]) {
        let (dg, du) = (SharedMut::new(dg), SharedMut::new(du));
        ops::par_rows(&self.pool, g.len(), &|r| {
            // SAFETY: each thread writes only its own values.
            let (dg, du) = unsafe { (dg.slice(r.start, r.len()), du.slice(r.start, r.len())) };
            ops::swiglu_backward(&da[r.clone()], &g[r.clone()], &u[r.clone()], dg, du)
        });
    }

    fn attn_shape(&self) -> AttnShape {
        AttnShape { n_head: self.config.n_head, n_head_kv: self.config.n_head_kv, head_dim: self.config.head_dim }
    }

    /// y (N, out) = x W^T + the LoRA path of `target` in `layer` (if adapted), keeping its u.
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, l: usize, target: Target, params: &LoraParams<F>, x: &[F], n: usize, y: &mut [F], saved_u: &mut Vec<F>, mask: &[F]) {
        let w = &self.layers[l].maps[target.index()];
        F::matmul_nt(&self.pool, self.level, &w.fwd, x, n, y);
        if let Some(s) = &params.slots[l][target.index()] {
            let r = params.config.rank;
            resize(saved_u, n * r);
            let scaling = F::from_f64(params.config.scaling() as f64);
            let m = if mask.is_empty() { None } else { Some(mask) };
            ops::lora_forward(&self.pool, x, m, &params.values[s.a.clone()], &params.values[s.b.clone()], s.n_in, scaling, saved_u, y);
        }
    }

    /// dx (N, in) = dy W (`first`: what dx held is dropped) or dx += dy W, plus the LoRA path's
    /// gradients (into `grads`) and input gradient.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        l: usize,
        target: Target,
        params: &LoraParams<F>,
        saved: &Saved<F>,
        x: &[F],
        dy: &[F],
        n: usize,
        first: bool,
        dx: &mut [F],
        grads: &mut [F],
        tmp: &mut Vec<F>,
    ) {
        let w = &self.layers[l].maps[target.index()];
        if first {
            F::matmul_nt(&self.pool, self.level, &w.bwd, dy, n, dx);
        } else {
            resize(tmp, n * w.n_in);
            F::matmul_nt(&self.pool, self.level, &w.bwd, dy, n, tmp);
            // dx += tmp, rows split over the pool.
            let (dx_ptr, tmp) = (SharedMut::new(dx), &tmp[..]);
            let width = w.n_in;
            ops::par_rows(&self.pool, n, &|rows| {
                // SAFETY: each thread adds into its own rows of dx.
                let d = unsafe { dx_ptr.slice(rows.start * width, rows.len() * width) };
                for (d, &t) in d.iter_mut().zip(&tmp[rows.start * width..rows.end * width]) {
                    *d += t;
                }
            });
        }
        if let Some(s) = &params.slots[l][target.index()] {
            let scaling = F::from_f64(params.config.scaling() as f64);
            let mask = &saved.masks[target.index()];
            let m = if mask.is_empty() { None } else { Some(&mask[..]) };
            let (ga, gb) = split_two(grads, &s.a, &s.b);
            ops::lora_backward_add(
                &self.pool,
                dy,
                x,
                m,
                &params.values[s.a.clone()],
                &params.values[s.b.clone()],
                &saved.lora_u[target.index()],
                s.n_in,
                scaling,
                ga,
                gb,
                dx,
            );
        }
    }

    /// The forward pass over `batch`, keeping what the backward needs in `acts`. With `dropout`
    /// (a seed), each adapted map draws its dropout mask.
    pub fn forward(&self, params: &LoraParams<F>, batch: &Batch, acts: &mut Activations<F>, dropout: Option<u64>) {
        let c = &self.config;
        let (n, d, dh) = (batch.tokens.len(), c.n_embd, c.head_dim);
        let (qd, kvd, f) = (c.n_head * dh, c.n_head_kv * dh, c.n_ff);
        let shape = self.attn_shape();
        acts.cos_sin.clear();
        acts.cos_sin.resize(n * dh / 2, (0.0, 0.0));
        for s in &batch.seqs {
            for (pos, r) in s.clone().enumerate() {
                kernels::ops::rope_angles(pos, c.rope_base, dh, &mut acts.cos_sin[r * dh / 2..(r + 1) * dh / 2]);
            }
        }
        acts.layers.resize_with(c.n_layer, Saved::default);
        let mut x: Vec<F> = Vec::with_capacity(n * d);
        for &t in &batch.tokens {
            x.extend(self.embd[t as usize * d..(t as usize + 1) * d].iter().map(|&v| F::from_f32(v)));
        }
        let p_drop = params.config.dropout;
        let mut rng = dropout.filter(|_| p_drop > 0.0).map(crate::rng::Rng::new);
        for l in 0..c.n_layer {
            let lw = &self.layers[l];
            let s = &mut acts.layers[l];
            for (i, target) in Target::ALL.into_iter().enumerate() {
                let n_in = if matches!(target, Target::O) {
                    qd
                } else if matches!(target, Target::Down) {
                    f
                } else {
                    d
                };
                match (&mut rng, &params.slots[l][i]) {
                    (Some(rng), Some(_)) => {
                        let keep = F::from_f64(1.0 / (1.0 - p_drop as f64));
                        s.masks[i].clear();
                        s.masks[i].extend((0..n * n_in).map(|_| if rng.uniform() < p_drop as f64 { F::ZERO } else { keep }));
                    }
                    _ => s.masks[i].clear(),
                }
            }
            s.x = x;
            resize(&mut s.rstd1, n);
            resize(&mut s.xn1, n * d);
            self.rms_norm_rows(&s.x, &lw.attn_norm, &mut s.xn1, &mut s.rstd1);
            resize(&mut s.q, n * qd);
            resize(&mut s.k, n * kvd);
            resize(&mut s.v, n * kvd);
            let [uq, uk, uv, uo, ug, uu, ud] = &mut s.lora_u;
            self.linear(l, Target::Q, params, &s.xn1, n, &mut s.q, uq, &s.masks[0]);
            self.linear(l, Target::K, params, &s.xn1, n, &mut s.k, uk, &s.masks[1]);
            self.linear(l, Target::V, params, &s.xn1, n, &mut s.v, uv, &s.masks[2]);
            ops::rope_forward(&mut s.q, dh, &acts.cos_sin);
            ops::rope_forward(&mut s.k, dh, &acts.cos_sin);
            resize(&mut s.probs, shape.probs_len(&batch.seqs));
            resize(&mut s.o, n * qd);
            ops::attention_forward(&self.pool, &shape, &batch.seqs, &s.q, &s.k, &s.v, &mut s.probs, &mut s.o);
            resize(&mut s.h, n * d);
            self.linear(l, Target::O, params, &s.o, n, &mut s.h, uo, &s.masks[3]);
            for (hv, &xv) in s.h.iter_mut().zip(&s.x) {
                *hv += xv;
            }
            resize(&mut s.rstd2, n);
            resize(&mut s.xn2, n * d);
            self.rms_norm_rows(&s.h, &lw.ffn_norm, &mut s.xn2, &mut s.rstd2);
            resize(&mut s.g, n * f);
            resize(&mut s.u, n * f);
            self.linear(l, Target::Gate, params, &s.xn2, n, &mut s.g, ug, &s.masks[4]);
            self.linear(l, Target::Up, params, &s.xn2, n, &mut s.u, uu, &s.masks[5]);
            resize(&mut s.a, n * f);
            self.swiglu_rows(&s.g, &s.u, &mut s.a);
            let mut next = vec![F::ZERO; n * d];
            self.linear(l, Target::Down, params, &s.a, n, &mut next, ud, &s.masks[6]);
            for (nv, &hv) in next.iter_mut().zip(&s.h) {
                *nv += hv;
            }
            x = next;
        }
        acts.x_final = x;
        resize(&mut acts.rstd_final, n);
        resize(&mut acts.xn_final, n * d);
        self.rms_norm_rows(&acts.x_final, &self.output_norm, &mut acts.xn_final, &mut acts.rstd_final);
    }

    /// The loss of the batch after [`TrainModel::forward`], and with `grads` (laid out like the
    /// parameters) the backward pass, adding `loss_scale` times the gradient of the summed
    /// negative log-likelihood. (For the mean over a step's scored rows, `loss_scale` = 1 / their
    /// count, over every micro-batch of the step.)
    pub fn loss_backward(&self, params: &LoraParams<F>, batch: &Batch, acts: &Activations<F>, loss_scale: f64, grads: Option<&mut [F]>) -> LossSum {
        let c = &self.config;
        let (n, d, v) = (batch.tokens.len(), c.n_embd, c.n_vocab);
        let scored = batch.scored();
        let want_grad = grads.is_some();
        let mut dxn = if want_grad { vec![F::ZERO; n * d] } else { Vec::new() };
        let mut nll = 0.0;
        let head_rows = head_rows(v).min(scored.len().max(1).next_multiple_of(32)); // never 0: chunks(0) panics
        let mut rows = vec![F::ZERO; head_rows * d];
        let mut logits = vec![F::ZERO; head_rows * v];
        let mut dlogits = vec![F::ZERO; head_rows * v];
        let mut drows = vec![F::ZERO; head_rows * d];
        let mut row_nll = vec![0f64; head_rows];
        let scale = F::from_f64(loss_scale);
        for chunk in scored.chunks(head_rows) {
            let m = chunk.len();
            for (i, &(r, _)) in chunk.iter().enumerate() {
                rows[i * d..(i + 1) * d].copy_from_slice(&acts.xn_final[r * d..(r + 1) * d]);
            }
            F::matmul_nt(&self.pool, self.level, &self.head.fwd, &rows[..m * d], m, &mut logits[..m * v]);
            // Rows split over the pool; their losses added in row order.
            let (dl, nl) = (SharedMut::new(&mut dlogits[..m * v]), SharedMut::new(&mut row_nll[..m]));
            ops::par_rows(&self.pool, m, &|rows| {
                for i in rows {
                    // SAFETY: each thread writes only its own rows of dlogits and their losses.
                    let g = want_grad.then(|| unsafe { dl.slice(i * v, v) });
                    unsafe { nl.write(i, F::cross_entropy(&logits[i * v..(i + 1) * v], chunk[i].1, scale, g)) };
                }
            });
            for x in &row_nll[..m] {
                nll += x;
            }
            if want_grad {
                F::matmul_nt(&self.pool, self.level, &self.head.bwd, &dlogits[..m * v], m, &mut drows[..m * d]);
                for (i, &(r, _)) in chunk.iter().enumerate() {
                    dxn[r * d..(r + 1) * d].copy_from_slice(&drows[i * d..(i + 1) * d]);
                }
            }
        }
        let loss = LossSum { nll, count: scored.len() };
        if let Some(grads) = grads {
            self.backward(params, batch, acts, &dxn, grads);
        }
        loss
    }

    /// Logits (rows, V) of `rows` of the batch after [`TrainModel::forward`] (for tests and
    /// evaluation).
    pub fn logits(&self, acts: &Activations<F>, rows: &[usize]) -> Vec<F> {
        let (d, v) = (self.config.n_embd, self.config.n_vocab);
        let mut x = Vec::with_capacity(rows.len() * d);
        for &r in rows {
            x.extend_from_slice(&acts.xn_final[r * d..(r + 1) * d]);
        }
        let mut out = vec![F::ZERO; rows.len() * v];
        F::matmul_nt(&self.pool, self.level, &self.head.fwd, &x, rows.len(), &mut out);
        out
    }

    /// The backward pass from the gradient of the final norm's output, dxn (N, D).
    fn backward(&self, params: &LoraParams<F>, batch: &Batch, acts: &Activations<F>, dxn: &[F], grads: &mut [F]) {
        let c = &self.config;
        let (n, d, dh) = (batch.tokens.len(), c.n_embd, c.head_dim);
        let (qd, kvd, f) = (c.n_head * dh, c.n_head_kv * dh, c.n_ff);
        let shape = self.attn_shape();
        let mut dx = vec![F::ZERO; n * d];
        self.rms_norm_backward_rows(dxn, &acts.x_final, &self.output_norm, &acts.rstd_final, &mut dx);
        let mut tmp = Vec::new();
        let (mut da, mut dg, mut du) = (vec![F::ZERO; n * f], vec![F::ZERO; n * f], vec![F::ZERO; n * f]);
        let mut dxn2 = vec![F::ZERO; n * d];
        let mut do_ = vec![F::ZERO; n * qd];
        let (mut dq, mut dk, mut dv) = (vec![F::ZERO; n * qd], vec![F::ZERO; n * kvd], vec![F::ZERO; n * kvd]);
        let mut dxn1 = vec![F::ZERO; n * d];
        for l in (0..c.n_layer).rev() {
            let (lw, s) = (&self.layers[l], &acts.layers[l]);
            // dx is d(loss)/d(x_next) = dh through the residual, and dy of the down map.
            // The first product into each gradient writes it, the others add.
            self.linear_backward(l, Target::Down, params, s, &s.a, &dx, n, true, &mut da, grads, &mut tmp);
            self.swiglu_backward_rows(&da, &s.g, &s.u, &mut dg, &mut du);
            self.linear_backward(l, Target::Gate, params, s, &s.xn2, &dg, n, true, &mut dxn2, grads, &mut tmp);
            self.linear_backward(l, Target::Up, params, s, &s.xn2, &du, n, false, &mut dxn2, grads, &mut tmp);
            // dh = dx + the norm's input gradient (kept in dx).
            self.rms_norm_backward_rows(&dxn2, &s.h, &lw.ffn_norm, &s.rstd2, &mut dx);
            self.linear_backward(l, Target::O, params, s, &s.o, &dx, n, true, &mut do_, grads, &mut tmp);
            ops::attention_backward(&self.pool, &shape, &batch.seqs, &s.q, &s.k, &s.v, &s.probs, &do_, &mut dq, &mut dk, &mut dv);
            ops::rope_backward(&mut dq, dh, &acts.cos_sin);
            ops::rope_backward(&mut dk, dh, &acts.cos_sin);
            self.linear_backward(l, Target::Q, params, s, &s.xn1, &dq, n, true, &mut dxn1, grads, &mut tmp);
            self.linear_backward(l, Target::K, params, s, &s.xn1, &dk, n, false, &mut dxn1, grads, &mut tmp);
            self.linear_backward(l, Target::V, params, s, &s.xn1, &dv, n, false, &mut dxn1, grads, &mut tmp);
            // dx(block input) = dh + the attention norm's input gradient.
            self.rms_norm_backward_rows(&dxn1, &s.x, &lw.attn_norm, &s.rstd1, &mut dx);
        }
    }
}

/// Two disjoint ranges of one slice, mutably.
fn split_two<'a, F>(v: &'a mut [F], a: &Range<usize>, b: &Range<usize>) -> (&'a mut [F], &'a mut [F]) {
    debug_assert!(a.end <= b.start);
    let (left, right) = v.split_at_mut(b.start);
    (&mut left[a.clone()], &mut right[..b.len()])
}
