//! Beam search as a state machine, with the semantics of Hugging Face transformers' vectorized
//! `GenerationMixin._beam_search` (transformers >= 4.50), independent of any model.
//!
//! The caller owns the model and one KV cache per running beam. Each step it hands over one row
//! of logits per running beam; [`BeamSearch::step`] answers with the new running beams as
//! `(parent, token)` pairs, so the caller forks its caches (`new[i] = old[parent] + token`).
//!
//! One step, as transformers does it (`generation/utils.py`: `_get_top_k_continuations`,
//! `_get_running_beams_for_next_iteration`, `_update_finished_beams`,
//! `_check_early_stop_heuristic`, `_beam_search_has_unfinished_sequences`):
//! 1. candidate score = running beam's summed log-prob + `log_softmax(logits row)[token]`, in f32;
//! 2. keep the top K = max(2, 1 + n_eos) * num_beams candidates over all beams;
//! 3. a candidate is *final* if its token is an EOS, if the caller's `is_final` says so (stop
//!    strings), or if it is the max_new_tokens-th token; a final candidate joins the finished set
//!    only if its rank among the K is < num_beams, with score sum / generated_len^length_penalty
//!    (generated_len counts the new tokens, the final EOS included, never the prompt);
//! 4. the next running beams are the best num_beams non-final candidates among the K;
//! 5. the search is done when no candidate can run, when early_stopping is `True` and num_beams
//!    hypotheses are finished, or when the finished set is full and the best running beam,
//!    normalised by a hypothetical length, cannot beat the worst finished one.
//!
//! Where we differ from transformers, deliberately:
//! - transformers starts num_beams beams at step one, all but one at score -1e9, so that the
//!   other "phantom" beams' children rank below every real candidate. We start with one running
//!   beam and never create phantoms: a step may run fewer than num_beams beams (fewer real
//!   candidates than num_beams, e.g. a vocabulary smaller than num_beams, or -inf log-probs). The
//!   ranks of real candidates are the same; transformers can return phantom sequences with
//!   scores near -1e9 where we return fewer hypotheses.
//! - Candidates whose log-prob is -inf (masked tokens, NaN logits) are dropped instead of being
//!   carried with an -inf score.
//! - transformers' finished set starts as num_beams slots at -1e9, so a hypothesis scoring below
//!   -1e9 would never be kept; ours starts empty.
//!
//! Ties are broken toward the lower flat index `beam * V + token`, which is what `torch.topk`
//! does on CPU in practice (it is not documented as stable); the finished set likewise keeps the
//! older hypothesis on a tie, as `torch.topk` over `cat(finished, new)` does.

use std::cmp::Ordering;

/// What can go wrong in a beam search.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BeamError {
    /// num_beams must be at least 1.
    #[error("num_beams must be >= 1, got {got}")]
    NumBeams {
        /// The rejected value.
        got: usize,
    },
    /// num_return_sequences must be in 1..=num_beams.
    #[error("num_return_sequences must be in 1..={num_beams} (1..=num_beams), got {got}")]
    NumReturnSequences {
        /// The rejected value.
        got: usize,
        /// The configured beam count.
        num_beams: usize,
    },
    /// The length penalty exponent must be finite.
    #[error("the length penalty must be a finite number, got {got}")]
    LengthPenalty {
        /// The rejected value.
        got: f64,
    },
    /// max_new_tokens must be at least 1.
    #[error("max_new_tokens must be >= 1 for a beam search, got 0")]
    MaxNewTokens,
    /// The vocabulary size given to a step was 0.
    #[error("a beam search step needs a vocabulary of at least one token, got 0")]
    EmptyVocab,
    /// The logits slice does not hold one row per running beam.
    #[error("expected {expected} logits ({running} running beams x vocab {vocab}), got {got}")]
    LogitsShape {
        /// running * vocab.
        expected: usize,
        /// The length of the slice given.
        got: usize,
        /// Running beams at this step.
        running: usize,
        /// The vocabulary size given.
        vocab: usize,
    },
    /// The vocabulary does not fit token ids in u32.
    #[error("vocab {vocab} is too large for u32 token ids")]
    VocabTooLarge {
        /// The vocabulary size given.
        vocab: usize,
    },
}

/// When the search stops before max_new_tokens (transformers' `early_stopping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EarlyStopping {
    /// Stop as soon as num_beams hypotheses are finished.
    True,
    /// transformers' default heuristic: once num_beams hypotheses are finished, stop when the best
    /// running beam's summed log-prob, normalised by the *current* length, does not beat the
    /// worst finished score.
    #[default]
    False,
    /// The canonical criterion: like `False`, but when the penalty grows with the length the
    /// best running score is normalised by max_new_tokens, so the search only stops when no
    /// running beam can possibly win.
    Never,
}

/// How a finished hypothesis's summed log-prob is normalised by its length `len` (generated
/// tokens, the final EOS included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LengthPenalty {
    /// transformers: `score = sum / len^p`. 1.0 (the default) is the mean log-prob, 0.0 the
    /// plain sum; p > 0 favours longer sequences, p < 0 shorter ones.
    Hf(f64),
    /// GNMT (Wu et al. 2016): `score = sum / ((5 + len)^alpha / 6^alpha)`; no peer implements it.
    Gnmt(f64),
}

impl Default for LengthPenalty {
    fn default() -> Self {
        LengthPenalty::Hf(1.0)
    }
}

impl LengthPenalty {
    /// The divisor for a hypothesis of `len` generated tokens, as f32. transformers computes
    /// `len ** p` as a Python float (f64) and divides an f32 tensor by it, which casts it to f32
    /// first (CPU `div_true_kernel`); we do the same.
    fn divisor(self, len: usize) -> f32 {
        let len = len as f64;
        let divisor = match self {
            LengthPenalty::Hf(p) => len.powf(p),
            LengthPenalty::Gnmt(alpha) => (5.0 + len).powf(alpha) / 6f64.powf(alpha),
        };
        divisor as f32
    }

    /// Whether the divisor grows with the length, so that a longer hypothesis can score better
    /// than a shorter one with the same summed log-prob.
    fn grows_with_length(self) -> bool {
        match self {
            LengthPenalty::Hf(p) | LengthPenalty::Gnmt(p) => p > 0.0,
        }
    }

    fn exponent(self) -> f64 {
        match self {
            LengthPenalty::Hf(p) | LengthPenalty::Gnmt(p) => p,
        }
    }
}

/// Settings of one beam search.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamConfig {
    /// Beams kept running (and hypotheses kept finished).
    pub num_beams: usize,
    /// Normalisation of finished scores by length.
    pub length_penalty: LengthPenalty,
    /// When to stop before max_new_tokens.
    pub early_stopping: EarlyStopping,
    /// How many hypotheses [`BeamSearch::finish`] returns, best first.
    pub num_return_sequences: usize,
    /// The most tokens a hypothesis may have (the final EOS included).
    pub max_new_tokens: usize,
    /// End-of-generation token ids; each widens the candidate pool by num_beams, as in
    /// transformers (`beams_to_keep = max(2, 1 + n_eos) * num_beams`).
    pub eos: Vec<u32>,
}

impl BeamConfig {
    /// transformers' defaults (length_penalty 1.0, early_stopping False, one sequence returned).
    pub fn new(num_beams: usize, max_new_tokens: usize, eos: Vec<u32>) -> BeamConfig {
        BeamConfig {
            num_beams,
            length_penalty: LengthPenalty::default(),
            early_stopping: EarlyStopping::default(),
            num_return_sequences: 1,
            max_new_tokens,
            eos,
        }
    }

    /// Checks the ranges: num_beams >= 1, num_return_sequences in 1..=num_beams, a finite
    /// penalty, max_new_tokens >= 1.
    pub fn validate(&self) -> Result<(), BeamError> {
        if self.num_beams == 0 {
            return Err(BeamError::NumBeams { got: 0 });
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams {
            return Err(BeamError::NumReturnSequences { got: self.num_return_sequences, num_beams: self.num_beams });
        }
        let exponent = self.length_penalty.exponent();
        if !exponent.is_finite() {
            return Err(BeamError::LengthPenalty { got: exponent });
        }
        if self.max_new_tokens == 0 {
            return Err(BeamError::MaxNewTokens);
        }
        Ok(())
    }
}

/// Why a hypothesis ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// Its last token is one of the configured EOS ids.
    Eos,
    /// The caller's `is_final` marked its last token (a stop string, in practice).
    StopString,
    /// It reached max_new_tokens.
    MaxTokens,
    /// [`BeamSearch::finish`] was called before the search was done; it was still running.
    Interrupted,
}

/// One finished sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// The generated tokens (no prompt), the final EOS or stop token included.
    pub tokens: Vec<u32>,
    /// `sum_logprobs` normalised by the length penalty: what hypotheses are ranked by.
    pub score: f32,
    /// Sum of the tokens' log-probabilities (f32, accumulated step by step as transformers does).
    pub sum_logprobs: f32,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Sentinel parent of the first tokens: the empty sequence.
const ROOT: usize = usize::MAX;

/// One generated token in the tree of all hypotheses; sequences are read back leaf to root.
#[derive(Clone, Copy, Debug)]
struct Node {
    parent: usize,
    token: u32,
}

#[derive(Clone, Copy, Debug)]
struct Running {
    /// The last token's node, ROOT before the first step.
    node: usize,
    sum_logprobs: f32,
}

#[derive(Clone, Copy, Debug)]
struct Finished {
    node: usize,
    score: f32,
    sum_logprobs: f32,
    finish: FinishReason,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    score: f32,
    /// beam * V + token.
    flat: usize,
}

/// Whether `a` ranks before `b`: higher score, then lower flat index.
fn ranks_before(a: &Candidate, b: &Candidate) -> bool {
    match a.score.partial_cmp(&b.score) {
        Some(Ordering::Greater) => true,
        Some(Ordering::Less) => false,
        _ => a.flat < b.flat,
    }
}

/// log_softmax of one logits row, given once as a normaliser and applied token by token.
#[derive(Clone, Copy, Debug)]
enum RowNormaliser {
    /// Finite maximum: log_prob(x) = (x - max) - log_sum, the order of operations of torch's CPU
    /// log_softmax. The sum of exp(x - max) is accumulated in f64 (torch uses f32 lanes), so
    /// log-probs can differ from torch's by an ulp or so.
    Finite { max: f32, log_sum: f32 },
    /// Some logits are +inf: the limit distribution is uniform over them.
    Infinite { log_count: f32 },
    /// Every logit is -inf or NaN: no candidate from this row.
    Empty,
}

impl RowNormaliser {
    fn of(row: &[f32]) -> RowNormaliser {
        // NaN counts as -inf: `f32::max` ignores NaN, and the comparisons below are false for it.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::INFINITY {
            let count = row.iter().filter(|&&x| x == f32::INFINITY).count();
            return RowNormaliser::Infinite { log_count: (count as f32).ln() };
        }
        if max == f32::NEG_INFINITY {
            return RowNormaliser::Empty;
        }
        let sum: f64 = row.iter().filter(|x| !x.is_nan()).map(|&x| f64::from((x - max).exp())).sum();
        RowNormaliser::Finite { max, log_sum: sum.ln() as f32 }
    }

    fn log_prob(self, x: f32) -> f32 {
        match self {
            RowNormaliser::Finite { max, log_sum } if x > f32::NEG_INFINITY => (x - max) - log_sum,
            RowNormaliser::Infinite { log_count } if x == f32::INFINITY => -log_count,
            _ => f32::NEG_INFINITY,
        }
    }
}

/// The state of one beam search over one prompt. See the module doc for the algorithm.
///
/// ```text
/// let mut search = BeamSearch::new(config)?;
/// while !search.is_done() {
///     // logits: (search.running(), V), one row per running beam in order
///     let forks = search.step(&logits, V, |beam, token| stop_string_ends(beam, token))?;
///     // fork caches: new beam i = old beam forks[i].0 + token forks[i].1
/// }
/// let best = search.finish();
/// ```
#[derive(Debug)]
pub struct BeamSearch {
    config: BeamConfig,
    /// K = max(2, 1 + n_eos) * num_beams candidates kept per step.
    beams_to_keep: usize,
    /// Tokens generated by every running beam so far.
    generated: usize,
    done: bool,
    nodes: Vec<Node>,
    running: Vec<Running>,
    next_running: Vec<Running>,
    /// Best first, at most num_beams.
    finished: Vec<Finished>,
    /// The step's top K, best first; reused between steps.
    candidates: Vec<Candidate>,
    /// (parent, token) of each new running beam; reused between steps.
    forks: Vec<(usize, u32)>,
}

impl BeamSearch {
    /// A search with one running beam (the prompt) and nothing finished.
    pub fn new(config: BeamConfig) -> Result<BeamSearch, BeamError> {
        config.validate()?;
        let num_beams = config.num_beams;
        let beams_to_keep = 2.max(1 + config.eos.len()) * num_beams;
        Ok(BeamSearch {
            beams_to_keep,
            generated: 0,
            done: false,
            nodes: Vec::with_capacity(beams_to_keep * config.max_new_tokens.min(256)),
            running: vec![Running { node: ROOT, sum_logprobs: 0.0 }],
            next_running: Vec::with_capacity(num_beams),
            finished: Vec::with_capacity(num_beams + 1),
            candidates: Vec::with_capacity(beams_to_keep + 1),
            forks: Vec::with_capacity(num_beams),
            config,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BeamConfig {
        &self.config
    }

    /// Whether the search is over: [`finish`](Self::finish) is all that is left.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many beams the caller must run for the next step (rows of logits it must give);
    /// 0 once done.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Tokens generated by each running beam so far (steps taken).
    pub fn generated_len(&self) -> usize {
        self.generated
    }

    /// The tokens generated so far by running beam `beam`, or None if there is no such beam.
    pub fn running_tokens(&self, beam: usize) -> Option<Vec<u32>> {
        self.running.get(beam).map(|r| self.sequence(r.node))
    }

    /// The summed log-prob of running beam `beam`, or None if there is no such beam.
    pub fn running_sum_logprobs(&self, beam: usize) -> Option<f32> {
        self.running.get(beam).map(|r| r.sum_logprobs)
    }

    /// One step. `logits` holds one row of `vocab` logits per running beam, in the order of the
    /// previous step's answer (one row at the first step). `is_final(beam, token)` says whether
    /// appending `token` to running beam `beam` ends that hypothesis for a reason other than EOS
    /// (a stop string); it is not asked about EOS tokens, nor about candidates that could
    /// neither finish nor run. Returns, for each new running beam in order, its parent beam and
    /// its new token; empty once the search is done (then [`finish`](Self::finish)).
    pub fn step(&mut self, logits: &[f32], vocab: usize, mut is_final: impl FnMut(usize, u32) -> bool) -> Result<&[(usize, u32)], BeamError> {
        self.forks.clear();
        if self.done {
            return Ok(&self.forks);
        }
        if vocab == 0 {
            return Err(BeamError::EmptyVocab);
        }
        if u32::try_from(vocab - 1).is_err() {
            return Err(BeamError::VocabTooLarge { vocab });
        }
        let expected = self.running.len() * vocab;
        if logits.len() != expected {
            return Err(BeamError::LogitsShape { expected, got: logits.len(), running: self.running.len(), vocab });
        }

        self.select_top_candidates(logits, vocab);

        let num_beams = self.config.num_beams;
        let len = self.generated + 1;
        let at_max = len >= self.config.max_new_tokens;
        let divisor = self.config.length_penalty.divisor(len);
        self.next_running.clear();
        for rank in 0..self.candidates.len() {
            // Past rank num_beams a candidate can only run, and only while running beams are
            // missing: stop asking `is_final` about candidates nobody needs.
            if rank >= num_beams && self.next_running.len() == num_beams {
                break;
            }
            let Candidate { score, flat } = self.candidates[rank];
            let beam = flat / vocab;
            // Fits: vocab - 1 fits in u32 (checked above).
            let token = (flat % vocab) as u32;
            let finish = if self.config.eos.contains(&token) {
                Some(FinishReason::Eos)
            } else if is_final(beam, token) {
                Some(FinishReason::StopString)
            } else if at_max {
                Some(FinishReason::MaxTokens)
            } else {
                None
            };
            match finish {
                Some(finish) if rank < num_beams => {
                    let node = self.push_node(self.running[beam].node, token);
                    self.offer_finished(Finished { node, score: score / divisor, sum_logprobs: score, finish });
                }
                // A final candidate ranked >= num_beams is dropped: transformers keeps it only as
                // a backup and never returns it.
                Some(_) => {}
                None if self.next_running.len() < num_beams => {
                    let node = self.push_node(self.running[beam].node, token);
                    self.next_running.push(Running { node, sum_logprobs: score });
                    self.forks.push((beam, token));
                }
                None => {}
            }
        }
        std::mem::swap(&mut self.running, &mut self.next_running);
        self.generated = len;

        if self.should_stop() {
            self.done = true;
            self.running.clear();
            self.forks.clear();
        }
        Ok(&self.forks)
    }

    /// The best num_return_sequences hypotheses, best score first (fewer if fewer finished).
    /// Called before the search is done, the running beams are first offered to the finished
    /// set as they are (transformers' pre-4.50 `BeamSearchScorer.finalize`), marked
    /// [`FinishReason::Interrupted`].
    pub fn finish(mut self) -> Vec<Hypothesis> {
        if !self.done && self.generated > 0 {
            let divisor = self.config.length_penalty.divisor(self.generated);
            for i in 0..self.running.len() {
                let beam = self.running[i];
                self.offer_finished(Finished {
                    node: beam.node,
                    score: beam.sum_logprobs / divisor,
                    sum_logprobs: beam.sum_logprobs,
                    finish: FinishReason::Interrupted,
                });
            }
        }
        self.finished
            .iter()
            .take(self.config.num_return_sequences)
            .map(|f| Hypothesis { tokens: self.sequence(f.node), score: f.score, sum_logprobs: f.sum_logprobs, finish: f.finish })
            .collect()
    }

    /// Fills `self.candidates` with the top K candidates over all rows, best first.
    ///
    /// A bounded sorted buffer: once K candidates are held, almost every other one is rejected
    /// by a single comparison with the worst held, so a step costs one pass over running * V
    /// logits plus O(K) per accepted candidate. Candidates at -inf (masked tokens, NaN logits)
    /// are dropped.
    fn select_top_candidates(&mut self, logits: &[f32], vocab: usize) {
        let keep = self.beams_to_keep;
        self.candidates.clear();
        for (beam, row) in logits.chunks_exact(vocab).enumerate() {
            let normaliser = RowNormaliser::of(row);
            if matches!(normaliser, RowNormaliser::Empty) {
                continue;
            }
            let beam_sum = self.running[beam].sum_logprobs;
            for (token, &x) in row.iter().enumerate() {
                let score = beam_sum + normaliser.log_prob(x);
                if score == f32::NEG_INFINITY || score.is_nan() {
                    continue;
                }
                let candidate = Candidate { score, flat: beam * vocab + token };
                if self.candidates.len() == keep {
                    match self.candidates.last() {
                        Some(worst) if ranks_before(&candidate, worst) => {
                            self.candidates.pop();
                        }
                        _ => continue,
                    }
                }
                let at = self.candidates.partition_point(|held| ranks_before(held, &candidate));
                self.candidates.insert(at, candidate);
            }
        }
    }

    /// Adds a hypothesis if the set has room or it beats the worst one (which it then evicts).
    /// Inserted after every hypothesis with an equal score: older ones win ties, as in
    /// transformers' `topk(cat(finished, new))`.
    fn offer_finished(&mut self, hypothesis: Finished) {
        let at = self.finished.partition_point(|held| held.score >= hypothesis.score);
        if at >= self.config.num_beams {
            return;
        }
        self.finished.insert(at, hypothesis);
        self.finished.truncate(self.config.num_beams);
    }

    /// transformers' `_check_early_stop_heuristic` and `_beam_search_has_unfinished_sequences`,
    /// evaluated after a step; `self.generated` already counts the step's token.
    fn should_stop(&self) -> bool {
        // No candidate can run: all of the top K were final (max_new_tokens reached, or EOS and
        // stop strings everywhere), or every log-prob was -inf.
        let Some(best_running) = self.running.first() else {
            return true;
        };
        // Until num_beams hypotheses are finished, an empty slot (-1e9 in transformers) is
        // always beaten, whatever early_stopping says.
        if self.finished.len() < self.config.num_beams {
            return false;
        }
        let penalty = self.config.length_penalty;
        let best_length = match self.config.early_stopping {
            EarlyStopping::True => return true,
            EarlyStopping::Never if penalty.grows_with_length() => self.config.max_new_tokens,
            EarlyStopping::Never | EarlyStopping::False => self.generated,
        };
        let best_possible = best_running.sum_logprobs / penalty.divisor(best_length);
        let worst_finished = self.finished.last().map_or(f32::NEG_INFINITY, |worst| worst.score);
        best_possible <= worst_finished
    }

    fn push_node(&mut self, parent: usize, token: u32) -> usize {
        self.nodes.push(Node { parent, token });
        self.nodes.len() - 1
    }

    /// The tokens from the first generated one to `node`.
    fn sequence(&self, mut node: usize) -> Vec<u32> {
        let mut tokens = Vec::new();
        while let Some(n) = self.nodes.get(node) {
            tokens.push(n.token);
            node = n.parent;
        }
        tokens.reverse();
        tokens
    }
}

#[cfg(test)]
#[path = "beam_tests.rs"]
mod tests;
