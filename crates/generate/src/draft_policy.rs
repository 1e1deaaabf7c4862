//! How many tokens to draft at each step of speculative decoding, from the acceptance seen so far.
//!
//! A verification of m = k + 1 tokens costs more than a plain decoding step (the weights are read
//! once, but every row does the arithmetic and the output head), and pays only through the drafts
//! it accepts. A drafter that is often wrong therefore makes decoding slower than no speculation:
//! prompt lookup on a chat answer that paraphrased instead of copying accepted 11% of 262 drafted
//! tokens and ran at 0.73x plain greedy decoding (issue 11). [`DraftPolicy`] keeps speculation
//! from costing more than it gives:
//! - the draft length adapts, within `1..=max` (the user's `--draft-k`): one more after a
//!   verification that accepted every draft, one more than it accepted after one that accepted
//!   some, one less after one that accepted none;
//! - after [`MISSES_BEFORE_BACKOFF`] verifications in a row that accepted nothing, drafting stops
//!   for a back-off of plain steps ([`FIRST_BACKOFF`] at first). The next verification after it
//!   is a probe: if it accepts nothing too, the next back-off is twice as long (up to
//!   [`MAX_BACKOFF`]); once a verification accepts a draft, the back-off starts over.
//!
//! Why a miss takes only one off: prompt lookup tends to be right or wrong per match (of its 39
//! drafts on the copy benchmark, 28 were accepted whole and 3 not at all), so one wrong match says
//! little about the next. Replaying the greedy tokens of the benchmarks under three verification
//! cost curves (two measured, one linear), one off beat halving by 2-4% on the copy task. Against a
//! fixed draft length of 4 the policy made +2% to +5% on the copy task, +0.3% to +1.6% on the
//! worst of 12 chat answers, and -0.5% to -2% on their geometric mean (answers that repeat
//! themselves lose some long drafts after a miss). Its main worth is the back-off, for a drafter
//! that keeps being wrong.
//!
//! The policy only decides how many tokens are drafted, never which ones nor whether they are
//! accepted, so greedy output stays identical to plain decoding and sampled output keeps its
//! distribution (each verification is exact whatever its length).

/// Back off after this many verifications in a row accepted no draft. One miss alone is common
/// at the end of a copied passage (the text goes its own way, the next match is elsewhere).
pub const MISSES_BEFORE_BACKOFF: usize = 2;

/// Plain decoding steps of the first back-off; each failed probe doubles it.
pub const FIRST_BACKOFF: usize = 4;

/// The longest back-off, in plain decoding steps. A failed probe of a token or two wastes 0.2-1.8
/// plain steps (verifying 2-3 tokens measured 1.2-2.8 steps, 2 threads to 1), once every 33 steps
/// at most; and a passage worth copying is not missed for long.
pub const MAX_BACKOFF: usize = 32;

/// The draft length and back-off state of one generation (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraftPolicy {
    /// The most tokens drafted per step (the user's `--draft-k`), at least 1.
    max_len: usize,
    /// Tokens to draft at the next step, 1..=max_len.
    len: usize,
    /// Verifications in a row that accepted no draft.
    misses: usize,
    /// Plain steps the next back-off lasts.
    backoff: usize,
    /// Plain steps left in the current back-off.
    cooldown: usize,
    /// Steps that drafted nothing because of a back-off.
    skipped: usize,
}

impl DraftPolicy {
    /// A policy drafting at most `max_len` tokens per step (0 counts as 1), starting at the most:
    /// a drafter has not been wrong yet.
    pub fn new(max_len: usize) -> DraftPolicy {
        let max_len = max_len.max(1);
        DraftPolicy { max_len, len: max_len, misses: 0, backoff: FIRST_BACKOFF, cooldown: 0, skipped: 0 }
    }

    /// How many tokens to draft at this step: 0 during a back-off (the step is counted in
    /// [`DraftPolicy::skipped`]), else 1..=max. Call once per decoding step.
    pub fn next_len(&mut self) -> usize {
        if self.cooldown > 0 {
            self.cooldown -= 1;
            self.skipped += 1;
            return 0;
        }
        self.len
    }

    /// Records a verification of `drafted` tokens that accepted the first `accepted` of them.
    /// A step whose drafter proposed nothing is not a verification: do not record it.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        debug_assert!(accepted <= drafted);
        self.len = if accepted >= drafted {
            self.len + 1
        } else if accepted > 0 {
            accepted + 1
        } else {
            self.len - 1
        }
        .clamp(1, self.max_len);
        if accepted > 0 {
            self.misses = 0;
            self.backoff = FIRST_BACKOFF;
            return;
        }
        self.misses += 1;
        if self.misses >= MISSES_BEFORE_BACKOFF {
            self.cooldown = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            // The next verification is a probe: one more miss backs off again.
            self.misses = MISSES_BEFORE_BACKOFF - 1;
        }
    }

    /// Steps that drafted nothing because of a back-off.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Tokens the next drafting step asks for (whatever the back-off).
    pub fn draft_len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` steps that verify nothing and returns how many of them were backing off.
    fn idle_steps(p: &mut DraftPolicy, n: usize) -> usize {
        (0..n).filter(|_| p.next_len() == 0).count()
    }

    #[test]
    fn starts_at_the_most_and_stays_there_while_every_draft_is_accepted() {
        let mut p = DraftPolicy::new(4);
        for _ in 0..10 {
            assert_eq!(p.next_len(), 4);
            p.record(4, 4);
        }
        assert_eq!(p.skipped(), 0);
        // A zero maximum drafts one token, never zero outside a back-off.
        assert_eq!(DraftPolicy::new(0).next_len(), 1);
    }

    #[test]
    fn length_drops_by_one_on_a_miss_follows_a_partial_acceptance_and_grows_by_one_up_to_the_most() {
        let mut p = DraftPolicy::new(8);
        p.record(8, 0);
        assert_eq!(p.draft_len(), 7, "a miss: one less");
        p.record(7, 2);
        assert_eq!(p.draft_len(), 3, "2 of 7 accepted: one more than that");
        p.record(3, 1);
        assert_eq!(p.draft_len(), 2);
        p.record(2, 0);
        assert_eq!(p.draft_len(), 1);
        p.record(1, 0);
        assert_eq!(p.draft_len(), 1, "never below 1");
        for want in [2, 3, 4, 5, 6, 7, 8, 8] {
            p.record(p.draft_len(), p.draft_len());
            assert_eq!(p.draft_len(), want, "every draft accepted: one more, never above the most");
        }
        // A drafter that proposed fewer than asked (prompt lookup near the end of the matched
        // text) and had all of them accepted: one more than the length asked for.
        p.record(8, 0);
        p.record(2, 2);
        assert_eq!(p.draft_len(), 8);
        // A partial acceptance never lengthens beyond the most.
        let mut p = DraftPolicy::new(2);
        p.record(4, 3);
        assert_eq!(p.draft_len(), 2);
    }

    #[test]
    fn misses_in_a_row_back_off_and_failed_probes_double_the_back_off_up_to_the_most() {
        let mut p = DraftPolicy::new(4);
        p.record(4, 0);
        assert_eq!(p.next_len(), 3, "one miss alone does not back off");
        p.record(3, 0);
        let mut expected_skipped = 0;
        let mut backoff = FIRST_BACKOFF;
        for _ in 0..8 {
            // A back-off of `backoff` plain steps, then a probe that misses.
            assert_eq!(idle_steps(&mut p, backoff), backoff);
            expected_skipped += backoff;
            let probe = p.next_len();
            assert!(probe > 0, "the probe comes right after the back-off");
            p.record(probe, 0);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        assert_eq!(backoff, MAX_BACKOFF, "the back-off reached its most");
        assert_eq!(p.draft_len(), 1, "each miss took one off");
        assert_eq!(p.skipped(), expected_skipped);
    }

    #[test]
    fn an_accepted_probe_resets_the_back_off() {
        let mut p = DraftPolicy::new(4);
        p.record(4, 0);
        p.record(3, 0);
        assert_eq!(idle_steps(&mut p, FIRST_BACKOFF), FIRST_BACKOFF);
        assert_eq!(p.next_len(), 2);
        p.record(2, 0);
        assert_eq!(idle_steps(&mut p, 2 * FIRST_BACKOFF), 2 * FIRST_BACKOFF);
        // The probe accepts its draft: drafting goes on, longer, and the next back-off (after
        // two misses in a row again) has the first one's length.
        assert_eq!(p.next_len(), 1);
        p.record(1, 1);
        assert_eq!(p.next_len(), 2);
        p.record(2, 0);
        assert_eq!(p.next_len(), 1, "one miss after a success does not back off");
        p.record(1, 0);
        assert_eq!(idle_steps(&mut p, FIRST_BACKOFF + 1), FIRST_BACKOFF, "back to the first back-off");
        assert_eq!(p.skipped(), 4 * FIRST_BACKOFF);
    }

    #[test]
    fn a_partial_acceptance_between_misses_keeps_drafting() {
        // Misses that alternate with partial acceptances never back off: each verification still
        // gave a token or more for free.
        let mut p = DraftPolicy::new(4);
        for _ in 0..20 {
            let len = p.next_len();
            assert_ne!(len, 0);
            p.record(len, 0);
            let len = p.next_len();
            assert_ne!(len, 0);
            p.record(len, 1);
            assert_eq!(p.draft_len(), 2, "1 accepted: 2 next (1 of 1 is all of them: one more)");
        }
        assert_eq!(p.skipped(), 0);
    }
}
