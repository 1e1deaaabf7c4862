//! Fine-tuning data: JSON lines in, tokenized examples with labels out, a held-out split, and
//! seeded epochs of batches that a checkpoint can resume exactly.
//!
//! Each non-blank line of a `.jsonl` file is one record, in one of two shapes (other keys are
//! allowed and ignored):
//! - `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}`,
//!   rendered with the model's chat template (ChatML when the GGUF has none). The loss is taken
//!   on the text of every assistant message and on the end-of-turn token the template writes
//!   after it (`<|im_end|>` in ChatML; any token that ends a generation, after nothing but
//!   whitespace), so that the model learns to stop.
//! - `{"prompt": "...", "completion": "..."}`: the two texts without a template (BOS first when
//!   the model asks for one), the completion followed by EOS. The loss is taken on the completion
//!   and the EOS.
//!
//! Labels are aligned with the tokens: `labels[t] = tokens[t]` where token t is learned, -100
//! ([`IGNORE_INDEX`]) elsewhere. The shift is the loss's job: [`kernels::loss::next_token_loss`]
//! scores the logits of position t against `labels[t + 1]`, so `labels[0]` is never scored and a
//! learned token is predicted from the position before it.
//!
//! Message text is always plain: a user who types `<|im_end|>` gets those characters, never the
//! control token; only the template's own markers are control tokens (as in
//! [`ChatTemplate::encode`]).
//!
//! Token boundaries. The rendered conversation is cut at the start and the end of each assistant
//! message and the pieces are tokenized apart, so a learned span starts and ends exactly on a
//! token boundary. The piece before an assistant message is then exactly what inference feeds the
//! model (the conversation so far plus the generation prompt, `<|im_start|>assistant\n`), and the
//! reply is tokenized as the model would write it after that prompt. For ChatML this equals
//! tokenizing the whole rendering at once, except where a reply starts with whitespace: the
//! prompt's last `"\n"` and the reply's whitespace may then be one token (`"\n\n"`) in the
//! whole rendering. There the cut wins, since it is what generation sees.

use std::ops::Range;
use std::path::{Path, PathBuf};

use generate::chat::{ChatError, ChatMessage, ChatTemplate};
use generate::rng::Rng;
use kernels::loss::IGNORE_INDEX;
use tokenizer::Tokenizer;

/// The share of a dataset held out for evaluation when no eval file is given: one in ten.
pub const HELD_OUT_DIVISOR: usize = 10;
/// The most examples held out: evaluation is run often and need not grow with the dataset.
pub const HELD_OUT_MAX: usize = 200;

/// The role whose messages are learned.
const ASSISTANT: &str = "assistant";

/// What is wrong with one record (the line itself; [`DataError::Record`] adds where it is).
/// Each message says what to do about it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RecordError {
    /// The line is not UTF-8.
    #[error("the line is not UTF-8 text; save the file as UTF-8")]
    NotUtf8,
    /// The line is not a JSON value.
    #[error("not valid JSON ({0}); write one JSON object per line")]
    Json(String),
    /// A JSON value of neither shape.
    #[error(r#"neither {{"messages": [...]}} nor {{"prompt": "...", "completion": "..."}}; give each record one of the two shapes"#)]
    Shape,
    /// Both shapes in one record.
    #[error(r#"both "messages" and "prompt"/"completion"; give each record one shape only"#)]
    BothShapes,
    /// `prompt` or `completion` that is missing or not a string.
    #[error(r#""{key}" is {found}; a prompt/completion record needs both "prompt" and "completion" as strings"#)]
    CompletionField {
        /// "prompt" or "completion".
        key: &'static str,
        /// What was there instead ("missing", "a number", ...).
        found: &'static str,
    },
    /// `messages` that is not an array.
    #[error(r#""messages" is {found}; it must be an array of {{"role": "...", "content": "..."}} objects"#)]
    MessagesNotArray {
        /// What was there instead.
        found: &'static str,
    },
    /// An empty `messages` array.
    #[error(r#""messages" is empty; give at least a user message and the assistant's reply"#)]
    EmptyMessages,
    /// A message without a string `role` or `content`.
    #[error(r#"message {index} has "{key}" {found}; every message needs "role" and "content" as strings"#)]
    MessageField {
        /// The message's position in `messages`, from 0.
        index: usize,
        /// "role" or "content".
        key: &'static str,
        /// "missing", "a number", ...
        found: &'static str,
    },
    /// No message has the role "assistant".
    #[error(r#"no message has the role "assistant", so there is nothing to learn; add the reply the model should give"#)]
    NoAssistant,
    /// The chat template failed on this conversation.
    #[error("{0}; fix the conversation (roles in the order the template accepts) or pass another template")]
    Template(ChatError),
    /// A prompt/completion record, but the tokenizer has no EOS token to end it with.
    #[error("the tokenizer has no EOS token to end a completion with; use the \"messages\" shape")]
    NoEos,
    /// No position of the example is scored.
    #[error("no token is learned (the template drops the assistant's text?); give the assistant or completion some text")]
    NothingToLearn,
}

/// Why a data file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{}: {source}; check the path", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record is not usable.
    #[error("{}:{line}: {problem}", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The line, from 1 (blank lines count).
        line: usize,
        /// What is wrong.
        problem: RecordError,
    },
    /// The file holds no records.
    #[error("{}: no records; write one JSON object per line", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Every record was dropped for its length.
    #[error("{}: all {records} records are dropped as longer than {max_len} tokens; raise the sequence length or truncate", path.display())]
    AllOverlong {
        /// The file.
        path: PathBuf,
        /// The records read.
        records: usize,
        /// The sequence length.
        max_len: usize,
    },
}

/// One record as read, before tokenization.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A conversation, rendered with the chat template.
    Chat(Vec<ChatMessage>),
    /// Plain text: the prompt, then the completion to learn.
    Completion {
        /// Context, not learned.
        prompt: String,
        /// Learned, followed by EOS.
        completion: String,
    },
}

/// A JSON value's kind, for error messages.
fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Record {
    /// Parses one line of a `.jsonl` file (not blank).
    pub fn parse(line: &str) -> Result<Record, RecordError> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| RecordError::Json(e.to_string()))?;
        let serde_json::Value::Object(object) = value else { return Err(RecordError::Shape) };
        let is_completion = object.contains_key("prompt") || object.contains_key("completion");
        match (object.get("messages"), is_completion) {
            (Some(_), true) => Err(RecordError::BothShapes),
            (Some(messages), false) => {
                let serde_json::Value::Array(items) = messages else { return Err(RecordError::MessagesNotArray { found: kind(messages) }) };
                if items.is_empty() {
                    return Err(RecordError::EmptyMessages);
                }
                let field = |index: usize, item: &serde_json::Value, key: &'static str| match item.get(key) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(other) => Err(RecordError::MessageField { index, key, found: kind(other) }),
                    None if item.is_object() => Err(RecordError::MessageField { index, key, found: "missing" }),
                    None => Err(RecordError::MessageField { index, key, found: "missing (the message is not an object)" }),
                };
                let messages = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Ok(ChatMessage { role: field(i, item, "role")?, content: field(i, item, "content")? }))
                    .collect::<Result<Vec<_>, RecordError>>()?;
                Ok(Record::Chat(messages))
            }
            (None, true) => {
                let field = |key: &'static str| match object.get(key) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(other) => Err(RecordError::CompletionField { key, found: kind(other) }),
                    None => Err(RecordError::CompletionField { key, found: "missing" }),
                };
                Ok(Record::Completion { prompt: field("prompt")?, completion: field("completion")? })
            }
            (None, false) => Err(RecordError::Shape),
        }
    }
}

/// One training sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Example {
    /// Token ids (T).
    pub tokens: Vec<u32>,
    /// (T): `labels[t] = tokens[t]` where token t is learned, [`IGNORE_INDEX`] elsewhere. The loss
    /// scores the logits of position t against `labels[t + 1]`, so `labels[0]` is never scored.
    pub labels: Vec<i64>,
}

impl Example {
    /// T.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the example has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The positions the loss scores: learned labels after the first position.
    pub fn scored(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()
    }

    /// Appends `tokens`, learned or not.
    fn push(&mut self, tokens: &[u32], learned: bool) {
        self.tokens.extend_from_slice(tokens);
        self.labels.extend(tokens.iter().map(|&t| if learned { t as i64 } else { IGNORE_INDEX }));
    }
}

/// Turns records into examples with a model's tokenizer and chat template.
pub struct ExampleEncoder<'a> {
    tokenizer: &'a Tokenizer,
    template: ChatTemplate,
    /// The spellings of BOS and EOS, which templates may write (`{{ bos_token }}`).
    bos_text: String,
    eos_text: String,
}

impl<'a> ExampleEncoder<'a> {
    /// An encoder with the template `template_source` (a model's `tokenizer.chat_template`), or
    /// ChatML for `None`.
    pub fn new(tokenizer: &'a Tokenizer, template_source: Option<&str>) -> Result<ExampleEncoder<'a>, ChatError> {
        let template = match template_source {
            Some(source) => ChatTemplate::new(source)?,
            None => ChatTemplate::chatml(),
        };
        let text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i)).unwrap_or("").to_string();
        Ok(ExampleEncoder { tokenizer, template, bos_text: text(tokenizer.bos_id()), eos_text: text(tokenizer.eos_id()) })
    }

    /// An encoder with the chat template of a GGUF file, or ChatML when it has none.
    pub fn from_gguf(tokenizer: &'a Tokenizer, file: &gguf::GgufFile) -> Result<ExampleEncoder<'a>, ChatError> {
        ExampleEncoder::new(tokenizer, file.get("tokenizer.chat_template").and_then(|v| v.as_str()))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.tokenizer
    }

    /// The example of a record; an error when nothing in it would be learned.
    pub fn encode(&self, record: &Record) -> Result<Example, RecordError> {
        let example = match record {
            Record::Chat(messages) => self.encode_chat(messages)?,
            Record::Completion { prompt, completion } => self.encode_completion(prompt, completion)?,
        };
        if example.scored() == 0 {
            return Err(RecordError::NothingToLearn);
        }
        Ok(example)
    }

    /// A conversation, learned on its assistant messages and the end-of-turn token after each.
    fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Example, RecordError> {
        if messages.is_empty() {
            return Err(RecordError::EmptyMessages);
        }
        if !messages.iter().any(|m| m.role == ASSISTANT) {
            return Err(RecordError::NoAssistant);
        }
        let rendered = self.template.render_marked(messages, false, &self.bos_text, &self.eos_text).map_err(RecordError::Template)?;
        let text = rendered.text.as_str();
        let learned = assistant_spans(messages, text, &rendered.content);
        let mut example = Example::default();
        let mut at = 0;
        for (i, span) in learned.iter().enumerate() {
            // The text before the reply (template markers, other messages as plain text), then
            // the reply, always plain.
            self.push_template_text(&mut example, text, at..span.start, &rendered.content, i > 0);
            example.push(&self.tokenizer.encode(&text[span.clone()], false), true);
            at = span.end;
        }
        self.push_template_text(&mut example, text, at..text.len(), &rendered.content, !learned.is_empty());
        Ok(example)
    }

    /// Appends the tokens of `text[range]`, a stretch between replies: control tokens parsed
    /// except inside the messages' text (`plain`). After a reply (`after_reply`), the template's
    /// end of turn is learned: the first token that ends a generation, with any whitespace the
    /// template writes before it (`' ' + eos_token` in some templates).
    fn push_template_text(&self, example: &mut Example, text: &str, range: Range<usize>, plain: &[Range<usize>], after_reply: bool) {
        let local: Vec<Range<usize>> =
            plain.iter().filter(|p| p.start >= range.start && p.end <= range.end).map(|p| p.start - range.start..p.end - range.start).collect();
        let tokens = self.tokenizer.encode_with_plain_spans(&text[range], &local);
        let is_space = |t: u32| self.tokenizer.token_bytes(t).is_some_and(|b| !b.is_empty() && b.iter().all(u8::is_ascii_whitespace));
        let end_of_turn = match tokens.iter().position(|&t| !is_space(t)) {
            Some(k) if after_reply && self.tokenizer.is_end_of_generation(tokens[k]) => k + 1,
            _ => 0,
        };
        example.push(&tokens[..end_of_turn], true);
        example.push(&tokens[end_of_turn..], false);
    }

    /// A prompt and its completion, learned on the completion and EOS.
    fn encode_completion(&self, prompt: &str, completion: &str) -> Result<Example, RecordError> {
        let eos = self.tokenizer.eos_id().ok_or(RecordError::NoEos)?;
        let mut example = Example::default();
        if let Some(bos) = self.tokenizer.bos_id().filter(|_| self.tokenizer.add_bos()) {
            example.push(&[bos], false);
        }
        // Apart, so that the completion starts on a token boundary, as when it is generated
        // after the prompt.
        example.push(&self.tokenizer.encode(prompt, false), false);
        example.push(&self.tokenizer.encode(completion, false), true);
        example.push(&[eos], true);
        Ok(example)
    }
}

/// The byte ranges of `text` that hold the assistant messages' text, in order. `content` holds the
/// ranges of the messages the template rendered, in rendering order (a template may leave some
/// out, or trim them): each is matched to the next message with that text. A range that matches
/// no later message (a template that writes a message twice) is not learned.
fn assistant_spans(messages: &[ChatMessage], text: &str, content: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut next = 0;
    for range in content {
        let piece = text.get(range.clone()).unwrap_or_default();
        let Some(offset) = messages[next..].iter().position(|m| m.content == piece || m.content.trim() == piece) else { continue };
        let index = next + offset;
        if messages[index].role == ASSISTANT {
            spans.push(range.clone());
        }
        next = index + 1;
    }
    spans
}

/// What to do with an example longer than the sequence length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlong {
    /// Keep its first tokens, if any of them is still learned; drop it otherwise.
    #[default]
    Truncate,
    /// Drop it.
    Skip,
}

/// How records become examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// The most tokens of one example (the training sequence length).
    pub max_len: usize,
    /// What to do with longer ones.
    pub overlong: Overlong,
}

/// What reading a file did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records read (non-blank lines).
    pub records: usize,
    /// Examples kept.
    pub kept: usize,
    /// Of those, examples cut to the sequence length.
    pub truncated: usize,
    /// Records dropped for their length ([`Overlong::Skip`], or nothing learned left after the
    /// cut).
    pub skipped: usize,
    /// Tokens of the kept examples.
    pub tokens: usize,
    /// Scored positions of the kept examples.
    pub scored: usize,
}

impl std::fmt::Display for LoadReport {
    /// One line for a progress log: "3000 records: 2998 kept (4 truncated), 2 skipped as too
    /// long; 151234 tokens, 20991 learned".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records: {} kept ({} truncated), {} skipped as too long; {} tokens, {} learned",
            self.records, self.kept, self.truncated, self.skipped, self.tokens, self.scored
        )
    }
}

/// Reads a `.jsonl` file of records into a dataset.
pub fn read_jsonl(path: &Path, encoder: &ExampleEncoder, options: LoadOptions) -> Result<(Dataset, LoadReport), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    parse_jsonl(&bytes, path, encoder, options)
}

/// [`read_jsonl`] of bytes already read; `path` names them in errors.
pub fn parse_jsonl(bytes: &[u8], path: &Path, encoder: &ExampleEncoder, options: LoadOptions) -> Result<(Dataset, LoadReport), DataError> {
    let mut report = LoadReport::default();
    let mut examples = Vec::new();
    let bytes = bytes.strip_prefix("\u{FEFF}".as_bytes()).unwrap_or(bytes);
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let error = |problem| DataError::Record { path: path.to_path_buf(), line: index + 1, problem };
        let line = std::str::from_utf8(line).map_err(|_| error(RecordError::NotUtf8))?;
        if line.trim().is_empty() {
            continue;
        }
        report.records += 1;
        let mut example = Record::parse(line).and_then(|record| encoder.encode(&record)).map_err(error)?;
        if example.len() > options.max_len {
            if options.overlong == Overlong::Skip {
                report.skipped += 1;
                continue;
            }
            example.tokens.truncate(options.max_len);
            example.labels.truncate(options.max_len);
            if example.scored() == 0 {
                report.skipped += 1;
                continue;
            }
            report.truncated += 1;
        }
        report.tokens += example.len();
        report.scored += example.scored();
        examples.push(example);
    }
    report.kept = examples.len();
    if report.records == 0 {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    if examples.is_empty() {
        return Err(DataError::AllOverlong { path: path.to_path_buf(), records: report.records, max_len: options.max_len });
    }
    Ok((Dataset { examples }, report))
}

/// Tokenized examples, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    /// The examples.
    pub examples: Vec<Example>,
}

/// Salts that keep the random streams of the split and of each epoch's shuffle apart for one
/// seed (odd 64-bit constants; any distinct ones do).
const SPLIT_SALT: u64 = 0x5EED_5EED_0000_0001;
const EPOCH_SALT: u64 = 0xD1B5_4A32_D192_ED03;

/// How many of `n` examples [`Dataset::split_held_out`] holds out: a tenth, at least 1 and at
/// most [`HELD_OUT_MAX`], and never all of them (0 for a single example).
pub fn held_out_size(n: usize) -> usize {
    (n / HELD_OUT_DIVISOR).clamp(1, HELD_OUT_MAX).min(n.saturating_sub(1))
}

/// A uniform index below `bound` (> 0): the high half of a 64x64-bit product (Lemire), whose bias
/// of at most bound / 2^64 is far below anything a shuffle of a dataset could show.
fn below(rng: &mut Rng, bound: usize) -> usize {
    ((rng.next_u64() as u128 * bound as u128) >> 64) as usize
}

/// 0..n in a seeded random order (Fisher-Yates).
fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, below(rng, i + 1));
    }
    order
}

/// The order of `n` examples in epoch `epoch`: the same for the same (seed, epoch) on every
/// machine, another for every epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    shuffled(n, &mut Rng::new(seed ^ epoch.wrapping_add(1).wrapping_mul(EPOCH_SALT)))
}

impl Dataset {
    /// The number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// All tokens.
    pub fn tokens(&self) -> usize {
        self.examples.iter().map(Example::len).sum()
    }

    /// All scored positions.
    pub fn scored(&self) -> usize {
        self.examples.iter().map(Example::scored).sum()
    }

    /// Splits off [`held_out_size`] examples chosen by `seed` for evaluation, when no eval file is
    /// given: (train, held out), each in file order. The same data and seed give the same split.
    pub fn split_held_out(self, seed: u64) -> (Dataset, Dataset) {
        let n = self.len();
        let held = shuffled(n, &mut Rng::new(seed ^ SPLIT_SALT));
        let mut is_held = vec![false; n];
        held[..held_out_size(n)].iter().for_each(|&i| is_held[i] = true);
        let (mut train, mut eval) = (Vec::new(), Vec::new());
        for (example, held) in self.examples.into_iter().zip(is_held) {
            (if held { &mut eval } else { &mut train }).push(example);
        }
        (Dataset { examples: train }, Dataset { examples: eval })
    }

    /// A 64-bit FNV-1a hash of every token and label, to store in a checkpoint and check on resume
    /// that the data is the same (a cursor into other data would silently continue elsewhere).
    pub fn fingerprint(&self) -> u64 {
        const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
        let mut hash = FNV_OFFSET;
        let mut eat = |x: u64| {
            for byte in x.to_le_bytes() {
                hash = (hash ^ byte as u64).wrapping_mul(FNV_PRIME);
            }
        };
        eat(self.len() as u64);
        for example in &self.examples {
            eat(example.len() as u64);
            example.tokens.iter().for_each(|&t| eat(t as u64));
            example.labels.iter().for_each(|&l| eat(l as u64));
        }
        hash
    }

    /// Batches of `batch_size` examples (at least 1), epoch after epoch without end, each epoch in
    /// the order [`epoch_order`] gives for `seed`; an epoch's last batch holds what is left. Starts
    /// at `from` (`Cursor::default()` for a fresh run, a batch's [`Batch::next`] to resume).
    /// Yields nothing for an empty dataset.
    pub fn batches(&self, batch_size: usize, seed: u64, from: Cursor) -> Batches<'_> {
        let cursor = if from.position >= self.len() { Cursor { epoch: from.epoch.saturating_add(1), position: 0 } } else { from };
        Batches { dataset: self, batch_size: batch_size.max(1), seed, order: epoch_order(self.len(), seed, cursor.epoch), cursor }
    }
}

/// Where an epoch iterator stands: the epoch, and the position in that epoch's order of the next
/// example. Saved with a checkpoint, it continues the run exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The epoch, from 0.
    pub epoch: u64,
    /// The next example's position in the epoch's order.
    pub position: usize,
}

/// One batch of [`Batches`].
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<'a> {
    /// The epoch the batch belongs to.
    pub epoch: u64,
    /// B sequences of their own lengths, to run as one flat batch.
    pub examples: Vec<&'a Example>,
    /// Where the next batch starts: save it with a checkpoint taken after this batch's step.
    pub next: Cursor,
}

/// The iterator of [`Dataset::batches`].
pub struct Batches<'a> {
    dataset: &'a Dataset,
    batch_size: usize,
    seed: u64,
    /// The order of `cursor.epoch`.
    order: Vec<usize>,
    cursor: Cursor,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        let n = self.dataset.len();
        if n == 0 {
            return None;
        }
        let dataset = self.dataset;
        let Cursor { epoch, position } = self.cursor;
        let end = position.saturating_add(self.batch_size).min(n);
        let examples = self.order[position..end].iter().map(|&i| &dataset.examples[i]).collect();
        self.cursor = if end == n { Cursor { epoch: epoch.saturating_add(1), position: 0 } } else { Cursor { epoch, position: end } };
        if self.cursor.epoch != epoch {
            self.order = epoch_order(n, self.seed, self.cursor.epoch);
        }
        Some(Batch { epoch, examples, next: self.cursor })
    }
}
