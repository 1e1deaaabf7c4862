//! Token sampling: greedy, or a chain of small stages over the candidate tokens, then a draw.
//!
//! The stages ([`Stage`]): logit bias, repetition / frequency / presence penalties over a window
//! of recent tokens, top_k, typical_p, top_p, min_p and temperature. [`SamplerOrder`] picks the
//! order; the default is llama.cpp's, where top_p / min_p / typical_p judge the model's own
//! distribution and temperature only reshapes the draw among the survivors. Hugging Face
//! `generate` applies temperature first, so with T != 1 the two keep different sets: a high T
//! flattens the distribution and HF's top_p then keeps more tokens. (top_k does not care:
//! dividing by T > 0 keeps the ranking.)
//!
//! Determinism: candidates are ranked by logit descending and ties go to the lower token id, so a
//! given (logits, config, seed, accepted tokens) always yields the same token sequence.
//!
//! Penalties need to know what came before: the caller feeds every token it wants penalised
//! (generated ones, and prompt tokens if wished) to [`Sampler::accept`]; sampling never records
//! on its own.

mod config;
mod distribution;
mod math;
mod penalties;
mod stages;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stages;

pub use config::{SamplerConfig, SamplerError, SamplerOrder, Stage, MAX_PENALTY_WINDOW};
pub use distribution::draw_weighted;
pub use math::{argmax, log_softmax_at, softmax_inplace};

use crate::rng::Rng;
use math::LogNormalizer;
use penalties::PenaltyHistory;
use stages::{rank, Candidate, Scored};

/// Log-probabilities reported alongside a sampled token.
///
/// They are log-softmax of the logits after logit bias and penalties, before temperature and
/// before any truncation (what OpenAI's API reports): the model's view of the choice, the same in
/// both stage orders, and finite for tokens that top_k / top_p dropped. A banned token has -inf.
#[derive(Clone, Debug, PartialEq)]
pub struct Logprobs {
    /// The chosen token.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The [`SamplerConfig::logprobs`] most likely tokens with their log-probabilities, most
    /// likely first, ties to the lower id (the chosen token appears here only if it is among them).
    pub top: Vec<(u32, f32)>,
}

/// A configured sampler with its own random stream, penalty history and scratch buffers.
///
/// The buffers grow to the vocabulary size on the first call and are reused afterwards, so
/// sampling allocates nothing once warmed up (except the small `top` list of [`Logprobs`]).
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    history: PenaltyHistory,
    /// (V) at most; the candidates still in the running.
    candidates: Vec<Candidate>,
    /// Whether `candidates` is in [`rank`] order (else it is indexed by id, or unordered).
    ranked: bool,
    /// Same length as `candidates`: their probabilities, scratch for the stages and the draw.
    probs: Vec<f32>,
    /// Scratch for typical_p.
    scored: Vec<Scored>,
    /// (V) the candidates after bias and penalties, indexed by id, kept for log-probabilities.
    snapshot: Vec<Candidate>,
}

impl Sampler {
    /// A sampler for `config`, after checking it.
    pub fn new(config: SamplerConfig) -> Result<Sampler, SamplerError> {
        config.validate()?;
        Ok(Sampler {
            rng: Rng::new(config.seed),
            history: PenaltyHistory::new(config.penalty_window),
            config,
            candidates: Vec::new(),
            ranked: false,
            probs: Vec::new(),
            scored: Vec::new(),
            snapshot: Vec::new(),
        })
    }

    /// The settings this sampler was made with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Records a token for the penalties (a generated one, or a prompt token to penalise
    /// repeating the prompt). [`Sampler::sample`] does not record its choice: call this with it.
    pub fn accept(&mut self, token: u32) {
        self.history.accept(token);
    }

    /// Forgets every accepted token, e.g. before a new, unrelated prompt.
    pub fn reset_history(&mut self) {
        self.history.clear();
    }

    /// Whether this sampler always picks the argmax of the raw logits (temperature <= 0, no bias,
    /// no penalties, no log-probabilities), so that a caller may skip computing the logits and
    /// take the argmax some cheaper way.
    pub fn is_plain_greedy(&self) -> bool {
        self.config.temperature <= 0.0 && self.config.logit_bias.is_empty() && !self.config.has_penalties() && self.config.logprobs == 0
    }

    /// Picks a token id from one row of logits (V). NaN logits count as -inf.
    ///
    /// Empty logits are a caller bug (debug assertion); a release build returns 0. If every
    /// token is banned (-inf), the lowest id is returned.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.choose(logits, false).0
    }

    /// Like [`Sampler::sample`], and also the log-probabilities (see [`Logprobs`]) when
    /// [`SamplerConfig::logprobs`] > 0; `None` when it is 0. The same seed and calls give the same
    /// tokens as [`Sampler::sample`].
    pub fn sample_with_logprobs(&mut self, logits: &[f32]) -> (u32, Option<Logprobs>) {
        let want = self.config.logprobs > 0;
        self.choose(logits, want)
    }

    fn choose(&mut self, logits: &[f32], want_logprobs: bool) -> (u32, Option<Logprobs>) {
        debug_assert!(!logits.is_empty(), "sample called with empty logits");
        if logits.is_empty() {
            return (0, None);
        }
        if self.is_plain_greedy() {
            return (argmax(logits), None);
        }
        let stages = self.config.order.stages();
        // Bias and penalties lead every order; log-probabilities are read right after them.
        let split = stages.iter().position(|s| !s.adjusts_logits()).unwrap_or(stages.len());
        self.load(logits);
        for &stage in &stages[..split] {
            self.run(stage);
        }
        let normalizer = want_logprobs.then(|| {
            self.snapshot.clear();
            self.snapshot.extend_from_slice(&self.candidates);
            LogNormalizer::new(self.snapshot.iter().map(|c| c.logit))
        });
        let id = if self.config.temperature <= 0.0 {
            // The best by rank: ties to the lowest id, like `argmax`.
            self.candidates.iter().min_by(|a, b| rank(a, b)).map_or(0, |c| c.id)
        } else {
            for &stage in &stages[split..] {
                self.run(stage);
            }
            self.draw()
        };
        (id, normalizer.map(|n| self.logprobs(id, &n)))
    }

    /// Fills `candidates` from the logits, indexed by id, NaN turned into -inf.
    fn load(&mut self, logits: &[f32]) {
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &x)| Candidate { id: i as u32, logit: if x.is_nan() { f32::NEG_INFINITY } else { x } }));
        self.ranked = false;
    }

    /// Runs one stage over `candidates`.
    fn run(&mut self, stage: Stage) {
        let c = &self.config;
        match stage {
            Stage::LogitBias => stages::apply_logit_bias(&mut self.candidates, &c.logit_bias),
            Stage::Penalties => self.history.apply(&mut self.candidates, c),
            Stage::Temperature => stages::temperature(&mut self.candidates, c.temperature),
            Stage::TopK => {
                stages::top_k(&mut self.candidates, c.top_k);
                self.ranked = true;
            }
            Stage::TopP => {
                self.rank_candidates();
                stages::top_p(&mut self.candidates, &mut self.probs, self.config.top_p);
            }
            Stage::MinP => {
                self.rank_candidates();
                stages::min_p(&mut self.candidates, self.config.min_p);
            }
            Stage::TypicalP => {
                self.rank_candidates();
                let mass = self.config.typical_p;
                stages::typical_p(&mut self.candidates, &mut self.probs, &mut self.scored, mass);
            }
        }
    }

    /// Puts `candidates` in rank order, once.
    fn rank_candidates(&mut self) {
        if !self.ranked {
            self.candidates.sort_unstable_by(rank);
            self.ranked = true;
        }
    }

    /// Draws one candidate with probability softmax(logit). Ranked first, so that a draw does not
    /// depend on which stages happened to reorder the list.
    fn draw(&mut self) -> u32 {
        self.rank_candidates();
        self.probs.clear();
        self.probs.extend(self.candidates.iter().map(|c| c.logit));
        softmax_inplace(&mut self.probs);

        // Inverse-CDF draw. The sum may round to slightly under 1, so a draw beyond the last
        // cumulative value falls to the last candidate with p > 0 (never to a banned one).
        let r = self.rng.next_f32();
        let mut cumulative = 0.0f32;
        let mut last_possible = self.candidates.first().map_or(0, |c| c.id);
        for (c, &p) in self.candidates.iter().zip(&self.probs) {
            cumulative += p;
            if r < cumulative {
                return c.id;
            }
            if p > 0.0 {
                last_possible = c.id;
            }
        }
        last_possible
    }

    /// The log-probabilities of `id` and of the top alternatives, from `snapshot`.
    fn logprobs(&mut self, id: u32, normalizer: &LogNormalizer) -> Logprobs {
        let logit = self.snapshot.get(id as usize).map_or(f32::NEG_INFINITY, |c| c.logit);
        let n = self.config.logprobs.min(self.snapshot.len());
        if n > 0 && n < self.snapshot.len() {
            self.snapshot.select_nth_unstable_by(n - 1, rank);
        }
        self.snapshot.truncate(n);
        self.snapshot.sort_unstable_by(rank);
        Logprobs {
            token: id,
            logprob: normalizer.logprob(logit) as f32,
            top: self.snapshot.iter().map(|c| (c.id, normalizer.logprob(c.logit) as f32)).collect(),
        }
    }
}
