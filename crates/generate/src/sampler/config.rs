//! Sampler settings, the two stage orders, and their validation.

use thiserror::Error;

/// The longest penalty window accepted. Far beyond any context length; it exists to catch a
/// negative number cast to `usize` (llama.cpp's `-1` means "the whole context": use 0 here).
pub const MAX_PENALTY_WINDOW: usize = 1 << 24;

/// A sampler setting outside its allowed range.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SamplerError {
    /// Temperature must be finite and >= 0.
    #[error("temperature must be a finite number >= 0 (0 means greedy), got {got}")]
    Temperature {
        /// The rejected value.
        got: f32,
    },
    /// top_p must be in (0, 1].
    #[error("top_p must be in (0, 1] (1 turns it off), got {got}")]
    TopP {
        /// The rejected value.
        got: f32,
    },
    /// min_p must be in [0, 1].
    #[error("min_p must be in [0, 1] (0 turns it off), got {got}")]
    MinP {
        /// The rejected value.
        got: f32,
    },
    /// typical_p must be in (0, 1].
    #[error("typical_p must be in (0, 1] (1 turns it off), got {got}")]
    TypicalP {
        /// The rejected value.
        got: f32,
    },
    /// repeat_penalty must be finite and > 0.
    #[error("repeat_penalty must be a finite number > 0 (1 turns it off), got {got}")]
    RepeatPenalty {
        /// The rejected value.
        got: f32,
    },
    /// frequency_penalty and presence_penalty must be finite.
    #[error("{name} must be a finite number (0 turns it off), got {got}")]
    Penalty {
        /// `frequency_penalty` or `presence_penalty`.
        name: &'static str,
        /// The rejected value.
        got: f32,
    },
    /// The penalty window is implausibly large.
    #[error("penalty_window must be at most {max} tokens (0 means the whole history), got {got}")]
    PenaltyWindow {
        /// The rejected value.
        got: usize,
        /// [`MAX_PENALTY_WINDOW`].
        max: usize,
    },
    /// A logit bias must be finite or -inf (a ban).
    #[error("logit bias for token {token} must be finite or -inf (a ban), got {got}")]
    LogitBias {
        /// The token the bias was for.
        token: u32,
        /// The rejected value.
        got: f32,
    },
}

/// One stage of the sampling chain.
///
/// Every stage reads and rewrites the list of candidates (token id, logit); the draw at the end
/// takes softmax over whatever survives. Logit bias and penalties come first in both orders, as
/// in llama.cpp and Hugging Face, and they are the only stages that also apply to greedy decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Adds [`SamplerConfig::logit_bias`].
    LogitBias,
    /// Repetition, frequency and presence penalties over the recent window.
    Penalties,
    /// Keeps the k highest logits.
    TopK,
    /// Keeps the tokens whose surprise is closest to the entropy, up to `typical_p` of the mass.
    TypicalP,
    /// Keeps the most likely prefix holding `top_p` of the mass.
    TopP,
    /// Keeps tokens with p >= min_p * p_max.
    MinP,
    /// Divides the logits by the temperature.
    Temperature,
}

impl Stage {
    /// Whether the stage only changes logits of the whole vocabulary (bias, penalties) rather than
    /// truncating or rescaling the candidates. These lead every order, apply to greedy decoding
    /// too, and need the candidates indexed by id.
    pub fn adjusts_logits(self) -> bool {
        matches!(self, Stage::LogitBias | Stage::Penalties)
    }
}

/// Which order the stages run in. They differ in where temperature sits: before the
/// truncations (Hugging Face), top_p / min_p / typical_p judge the tempered distribution; after
/// them (llama.cpp), they judge the model's own distribution and temperature only reshapes the
/// draw among the survivors. With T = 1 both orders keep the same sets except for where
/// typical_p sits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SamplerOrder {
    /// The default, llama.cpp's chain (`common/common.h`, `common_params_sampling::samplers`,
    /// without DRY / XTC / top-n-sigma which we do not have): logit bias -> penalties -> top_k ->
    /// typical_p -> top_p -> min_p -> temperature -> draw.
    #[default]
    LlamaCpp,
    /// Hugging Face transformers (`GenerationMixin._get_logits_processor`: the sequence bias and
    /// repetition-penalty processors come before the sampling warpers, which it appends as
    /// temperature, top_k, top_p, min_p, typical_p): logit bias -> penalties -> temperature ->
    /// top_k -> top_p -> min_p -> typical_p -> draw.
    HuggingFace,
}

impl SamplerOrder {
    /// The stages of this order, first to last (the draw follows).
    pub fn stages(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            SamplerOrder::LlamaCpp => &[LogitBias, Penalties, TopK, TypicalP, TopP, MinP, Temperature],
            SamplerOrder::HuggingFace => &[LogitBias, Penalties, Temperature, TopK, TopP, MinP, TypicalP],
        }
    }
}

/// How to pick the next token from a row of logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Divides the logits; <= 0 means greedy (argmax of the biased and penalised logits, no
    /// randomness, the truncation stages skipped).
    pub temperature: f32,
    /// Keep only the k highest logits; 0 turns it off.
    pub top_k: usize,
    /// Keep the smallest most-likely prefix whose probability mass is >= top_p; 1.0 turns it off.
    pub top_p: f32,
    /// Keep tokens with p >= min_p * p_max; 0.0 turns it off.
    pub min_p: f32,
    /// Seed of the sampler's own random stream.
    pub seed: u64,
    /// Locally typical sampling (Meister et al. 2022): keep the tokens whose -ln p is closest to
    /// the entropy until they hold typical_p of the mass; 1.0 turns it off.
    pub typical_p: f32,
    /// llama.cpp / Hugging Face repetition penalty, once per distinct token in the window:
    /// a positive logit is divided by it, a negative one multiplied; 1.0 turns it off.
    pub repeat_penalty: f32,
    /// OpenAI frequency penalty: logit -= frequency_penalty * count in the window; 0 turns it off.
    pub frequency_penalty: f32,
    /// OpenAI presence penalty: logit -= presence_penalty if the token is in the window; 0 off.
    pub presence_penalty: f32,
    /// How many of the most recent accepted tokens the penalties look at; 0 means all of them.
    pub penalty_window: usize,
    /// (token, bias) pairs added to the logits before everything else; -inf bans the token.
    /// Ids beyond the vocabulary are ignored; a token listed twice gets both biases.
    pub logit_bias: Vec<(u32, f32)>,
    /// The order of the stages.
    pub order: SamplerOrder,
    /// How many top alternatives [`crate::sampler::Sampler::sample_with_logprobs`] reports
    /// (0: only the chosen token's log-probability).
    pub logprobs: usize,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, typical_p off,
    /// penalties off over a 64-token window, no bias, llama.cpp order, seed 0.
    fn default() -> Self {
        SamplerConfig { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, ..SamplerConfig::greedy() }
    }
}

impl SamplerConfig {
    /// Always the most likely token: temperature 0, every filter and penalty off.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_window: 64,
            logit_bias: Vec::new(),
            order: SamplerOrder::LlamaCpp,
            logprobs: 0,
        }
    }

    /// Whether any of the three penalties is on.
    pub fn has_penalties(&self) -> bool {
        self.repeat_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0
    }

    /// Checks every setting is in its allowed range; the error names the range.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplerError::Temperature { got: self.temperature });
        }
        // The range checks are written so that NaN fails too.
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP { got: self.top_p });
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(SamplerError::MinP { got: self.min_p });
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return Err(SamplerError::TypicalP { got: self.typical_p });
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(SamplerError::RepeatPenalty { got: self.repeat_penalty });
        }
        for (name, got) in [("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)] {
            if !got.is_finite() {
                return Err(SamplerError::Penalty { name, got });
            }
        }
        if self.penalty_window > MAX_PENALTY_WINDOW {
            return Err(SamplerError::PenaltyWindow { got: self.penalty_window, max: MAX_PENALTY_WINDOW });
        }
        for &(token, got) in &self.logit_bias {
            if !(got.is_finite() || got == f32::NEG_INFINITY) {
                return Err(SamplerError::LogitBias { token, got });
            }
        }
        Ok(())
    }
}
