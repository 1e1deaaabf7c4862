//! AdamW with decoupled weight decay, a warm-up then cosine learning-rate schedule, and gradient
//! clipping by global norm, over the flat parameter vector. The arithmetic is PyTorch's
//! `torch.optim.AdamW` (non-fused) and `clip_grad_norm_`:
//!
//! ```text
//! p = p (1 - lr wd)
//! m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
//! p = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! clipping: g = g min(1, max_norm / (||g|| + 1e-6))
//! ```

use crate::real::Real;

/// AdamW's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// eps.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW's moments, and how many steps it has taken.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    /// First moments, like the parameters.
    pub m: Vec<f32>,
    /// Second moments, like the parameters.
    pub v: Vec<f32>,
    /// Steps taken (t of the bias corrections).
    pub t: u64,
}

impl AdamState {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> AdamState {
        AdamState { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }
}

impl AdamW {
    /// One step with learning rate `lr`: updates `params` from `grads`.
    pub fn step<F: Real>(&self, state: &mut AdamState, lr: f64, params: &mut [F], grads: &[F]) {
        state.t += 1;
        let t = state.t as i32;
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let (eps, inv_bc2) = (self.eps as f32, (1.0 / bc2_sqrt) as f32);
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut state.m).zip(&mut state.v) {
            let g = g.to_f64() as f32;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() * inv_bc2 + eps;
            let value = p.to_f64() as f32 * decay - step_size * *m / denom;
            *p = F::from_f32(value);
        }
    }
}

/// The learning rate at optimizer step `step` (0-based) of `total`: linear warm-up over
/// `warmup` steps (step s gets (s + 1) / warmup of `peak`), then a cosine from `peak` down to 0 at
/// step `total`.
pub fn cosine_lr(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm<F: Real>(grads: &mut [F], max_norm: f64) -> f64 {
    let norm = grads.iter().map(|g| g.to_f64() * g.to_f64()).sum::<f64>().sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = F::from_f64(coef);
        grads.iter_mut().for_each(|g| *g *= c);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_step_moves_each_parameter_by_lr() {
        // At t = 1, m^ = g and v^ = g^2, so the update is lr g / (|g| + eps): lr in g's sign.
        let opt = AdamW::default();
        let mut state = AdamState::new(3);
        let mut p = vec![1.0f32, -2.0, 0.5];
        opt.step(&mut state, 0.1, &mut p, &[0.3, -4.0, 1e-3]);
        let want = [0.9, -1.9, 0.4];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn adamw_decay_is_decoupled() {
        // A zero gradient still shrinks the parameter by lr wd.
        let opt = AdamW { weight_decay: 0.1, ..AdamW::default() };
        let mut state = AdamState::new(1);
        let mut p = vec![2.0f32];
        opt.step(&mut state, 0.5, &mut p, &[0.0]);
        assert!((p[0] - 2.0 * (1.0 - 0.05)).abs() < 1e-6);
    }

    #[test]
    fn adamw_matches_a_plain_f64_version_over_steps() {
        let opt = AdamW { weight_decay: 0.01, ..AdamW::default() };
        let mut state = AdamState::new(2);
        let mut p = vec![0.5f32, -0.25];
        let (mut pd, mut m, mut v) = ([0.5f64, -0.25], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=20 {
            let g = [(t as f64 * 0.37).sin(), (t as f64 * 0.11).cos() * 0.01];
            let lr = cosine_lr(1e-2, t - 1, 3, 20);
            opt.step(&mut state, lr, &mut p, &[g[0] as f32, g[1] as f32]);
            for i in 0..2 {
                pd[i] *= 1.0 - lr * 0.01;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let (mh, vh) = (m[i] / (1.0 - 0.9f64.powi(t as i32)), v[i] / (1.0 - 0.999f64.powi(t as i32)));
                pd[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        for i in 0..2 {
            assert!((p[i] as f64 - pd[i]).abs() < 1e-5, "{} vs {}", p[i], pd[i]);
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(cosine_lr(1.0, 0, 4, 10), 0.25);
        assert_eq!(cosine_lr(1.0, 3, 4, 10), 1.0);
        assert_eq!(cosine_lr(1.0, 4, 4, 10), 1.0);
        assert!((cosine_lr(1.0, 7, 4, 10) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 10, 4, 10).abs() < 1e-12);
        assert_eq!(cosine_lr(2.0, 0, 0, 1), 2.0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![3.0f32, 4.0];
        assert!((clip_grad_norm(&mut g, 1.0) - 5.0).abs() < 1e-9);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.3f32, 0.4];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, [0.3, 0.4]);
    }
}
