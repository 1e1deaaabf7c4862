//! Post-processors: what wraps an encoding once the model has run (`[CLS] ... [SEP]`,
//! `<s> ... </s>`) and the byte-level trimming of offsets, as Hugging Face applies them to a
//! single sequence.

use std::collections::HashMap;

use super::spec::{PostProcessorSpec, TemplatePiece, TemplateSpecialToken};
use super::{Draft, HfError};

/// The byte-level alphabet's spelling of a space (`Ġ`), which offset trimming counts as space.
const BYTE_LEVEL_SPACE: char = '\u{120}';

/// A post-processor ready to run.
#[derive(Clone, Debug)]
pub(crate) enum PostProcessor {
    /// The single-sequence template, expanded: `None` is `$A`, `Some((id, text))` a token.
    Template(Vec<Option<(u32, String)>>),
    Bert {
        cls: (u32, String),
        sep: (u32, String),
    },
    Roberta {
        cls: (u32, String),
        sep: (u32, String),
        trim_offsets: bool,
        add_prefix_space: bool,
    },
    ByteLevel {
        trim_offsets: bool,
        add_prefix_space: bool,
    },
    Sequence(Vec<PostProcessor>),
}

impl PostProcessor {
    /// Build from a spec, checking that every special token a template names is defined and
    /// that the single template uses only `$A`.
    pub fn new(spec: &PostProcessorSpec) -> Result<PostProcessor, HfError> {
        Ok(match spec {
            PostProcessorSpec::Template { single, pair, special_tokens } => {
                check_template("post_processor.pair", pair, special_tokens)?;
                check_template("post_processor.single", single, special_tokens)?;
                let mut expanded = Vec::new();
                for piece in single {
                    match piece {
                        TemplatePiece::Sequence { id, .. } if id == "A" => expanded.push(None),
                        TemplatePiece::Sequence { id, .. } => {
                            return Err(HfError::Invalid {
                                path: "post_processor.single".into(),
                                message: format!("the single template uses sequence ${id}"),
                            })
                        }
                        TemplatePiece::SpecialToken { id, .. } => {
                            // Checked just above.
                            if let Some(special) = special_tokens.get(id) {
                                for (token_id, text) in special.ids.iter().zip(&special.tokens) {
                                    expanded.push(Some((*token_id, text.clone())));
                                }
                            }
                        }
                    }
                }
                PostProcessor::Template(expanded)
            }
            PostProcessorSpec::Bert { sep, cls } => PostProcessor::Bert { cls: (cls.1, cls.0.clone()), sep: (sep.1, sep.0.clone()) },
            PostProcessorSpec::Roberta { sep, cls, trim_offsets, add_prefix_space } => PostProcessor::Roberta {
                cls: (cls.1, cls.0.clone()),
                sep: (sep.1, sep.0.clone()),
                trim_offsets: *trim_offsets,
                add_prefix_space: *add_prefix_space,
            },
            PostProcessorSpec::ByteLevel { add_prefix_space, trim_offsets } => {
                PostProcessor::ByteLevel { trim_offsets: *trim_offsets, add_prefix_space: *add_prefix_space }
            }
            PostProcessorSpec::Sequence(parts) => PostProcessor::Sequence(parts.iter().map(PostProcessor::new).collect::<Result<_, _>>()?),
        })
    }

    /// Whether running needs the text of every token (offset trimming looks at spaces in it).
    pub fn needs_token_texts(&self) -> bool {
        match self {
            PostProcessor::Template(_) | PostProcessor::Bert { .. } => false,
            PostProcessor::Roberta { trim_offsets, .. } | PostProcessor::ByteLevel { trim_offsets, .. } => *trim_offsets,
            PostProcessor::Sequence(parts) => parts.iter().any(PostProcessor::needs_token_texts),
        }
    }

    /// Apply to `draft`; special tokens are added only with `add_special`.
    pub fn apply(&self, draft: &mut Draft, add_special: bool) {
        match self {
            PostProcessor::Template(pieces) => {
                if add_special {
                    let mut body = Some(draft.take_all());
                    for piece in pieces {
                        match piece {
                            None => {
                                // `$A` appears once in a valid template; a second `$A` would
                                // repeat the sequence in Hugging Face, and adds nothing here.
                                if let Some(body) = body.take() {
                                    draft.append(body);
                                }
                            }
                            Some((id, text)) => draft.push_special(*id, text),
                        }
                    }
                }
            }
            PostProcessor::Bert { cls, sep } => {
                if add_special {
                    wrap(draft, cls, sep);
                }
            }
            PostProcessor::Roberta { cls, sep, trim_offsets, add_prefix_space } => {
                if *trim_offsets {
                    trim_byte_level_offsets(draft, *add_prefix_space);
                }
                if add_special {
                    wrap(draft, cls, sep);
                }
            }
            PostProcessor::ByteLevel { trim_offsets, add_prefix_space } => {
                if *trim_offsets {
                    trim_byte_level_offsets(draft, *add_prefix_space);
                }
            }
            PostProcessor::Sequence(parts) => {
                for part in parts {
                    part.apply(draft, add_special);
                }
            }
        }
    }
}

fn check_template(path: &str, pieces: &[TemplatePiece], special_tokens: &HashMap<String, TemplateSpecialToken>) -> Result<(), HfError> {
    for piece in pieces {
        if let TemplatePiece::SpecialToken { id, .. } = piece {
            if !special_tokens.contains_key(id) {
                return Err(HfError::Invalid { path: path.to_string(), message: format!("special token {id:?} is not in special_tokens") });
            }
        }
    }
    Ok(())
}

fn wrap(draft: &mut Draft, cls: &(u32, String), sep: &(u32, String)) {
    let body = draft.take_all();
    draft.push_special(cls.0, &cls.1);
    draft.append(body);
    draft.push_special(sep.0, &sep.1);
}

/// Hugging Face's `process_offsets`: leave out of each token's span the spaces (byte-level `Ġ`
/// or whitespace) at the ends of its text, counted in characters; but keep a single leading
/// space of the first token when `add_prefix_space` put it there.
fn trim_byte_level_offsets(draft: &mut Draft, add_prefix_space: bool) {
    let is_space = |c: char| c == BYTE_LEVEL_SPACE || c.is_whitespace();
    let Some(texts) = &draft.texts else {
        return;
    };
    for (i, text) in texts.iter().enumerate() {
        let mut leading = text.chars().take_while(|&c| is_space(c)).count();
        let trailing = text.chars().rev().take_while(|&c| is_space(c)).count();
        let offsets = &mut draft.offsets[i];
        if leading > 0 {
            let is_first = i == 0 || offsets.0 == 0;
            if is_first && add_prefix_space && leading == 1 {
                leading = 0;
            }
            offsets.0 = (offsets.0 + leading).min(offsets.1);
        }
        if trailing > 0 && offsets.1 >= trailing {
            offsets.1 = (offsets.1 - trailing).max(offsets.0);
        }
    }
}
