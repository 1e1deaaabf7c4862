//! Repetition, frequency and presence penalties over a window of recent tokens.

use super::config::SamplerConfig;
use super::stages::Candidate;
use std::collections::{HashMap, VecDeque};

/// The tokens the penalties look at: how often each appears among the last `window` accepted
/// tokens (all of them when `window` is 0).
///
/// Counts are kept up to date as tokens arrive and leave the window, so applying the penalties
/// costs O(distinct tokens in the window), not O(window), and touches no allocation once the map
/// has grown to the largest number of distinct tokens seen.
#[derive(Clone, Debug, Default)]
pub(crate) struct PenaltyHistory {
    window: usize,
    /// The last `window` tokens, oldest first; unused when `window` is 0.
    recent: VecDeque<u32>,
    /// token -> occurrences in the window; never holds a zero.
    counts: HashMap<u32, u32>,
}

impl PenaltyHistory {
    /// An empty history over the last `window` tokens (0: all of them).
    pub(crate) fn new(window: usize) -> PenaltyHistory {
        PenaltyHistory { window, ..PenaltyHistory::default() }
    }

    /// Records one token; the oldest leaves when the window is full.
    pub(crate) fn accept(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
        if self.window == 0 {
            return;
        }
        self.recent.push_back(token);
        if self.recent.len() > self.window {
            if let Some(old) = self.recent.pop_front() {
                if let Some(count) = self.counts.get_mut(&old) {
                    *count -= 1;
                    if *count == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
    }

    /// Forgets every token (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.recent.clear();
        self.counts.clear();
    }

    /// The capacities of the history's buffers (tests check they stop growing).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> (usize, usize) {
        (self.recent.capacity(), self.counts.capacity())
    }

    /// How often `token` appears in the window.
    #[cfg(test)]
    pub(crate) fn count(&self, token: u32) -> u32 {
        self.counts.get(&token).copied().unwrap_or(0)
    }

    /// Applies the penalties to `candidates`, which must be indexed by id; ids beyond the
    /// vocabulary are skipped. Per distinct token in the window, as llama.cpp does:
    /// the repetition penalty divides a positive logit and multiplies a negative one (so it
    /// always lowers the token), then logit -= frequency * count + presence.
    pub(crate) fn apply(&self, candidates: &mut [Candidate], config: &SamplerConfig) {
        if !config.has_penalties() {
            return;
        }
        for (&token, &count) in &self.counts {
            let Some(c) = candidates.get_mut(token as usize) else {
                continue;
            };
            debug_assert_eq!(c.id, token, "penalties need candidates indexed by id");
            if c.logit > 0.0 {
                c.logit /= config.repeat_penalty;
            } else {
                c.logit *= config.repeat_penalty;
            }
            c.logit -= count as f32 * config.frequency_penalty + config.presence_penalty;
        }
    }
}
