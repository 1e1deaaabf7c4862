//! Chat templates: turn a list of messages into the prompt text a model was trained on.
//!
//! GGUF files carry the model's Hugging Face Jinja template in `tokenizer.chat_template`. We
//! render it with minijinja (a real Jinja engine) set up the way transformers'
//! `apply_chat_template` sets up jinja2, because templates are written against that setup:
//! - `trim_blocks` and `lstrip_blocks` on (they decide every newline of the prompt);
//! - `{% break %}` / `{% continue %}` (jinja2's loopcontrols extension);
//! - Python string methods such as `.strip()`, `.startswith()`, `.split()` (minijinja-contrib's
//!   pycompat);
//! - `raise_exception(msg)`, `strftime_now(format)`, and a `tojson` that writes JSON the way
//!   Python's `json.dumps(ensure_ascii=False)` does (", " and ": " separators, no HTML escaping);
//! - `tools` and `documents` passed as none, as transformers does without tools.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use std::fmt::Write;
use thiserror::Error as ThisError;

/// A chat template that does not compile or fails to render.
#[derive(Debug, ThisError, Clone, PartialEq)]
pub enum ChatError {
    /// The template source is not valid Jinja.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// Rendering failed, or the template called `raise_exception`.
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant" (templates may accept others).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

/// The name of the one template an environment holds.
const TEMPLATE_NAME: &str = "chat";

/// The ChatML template (transformers' old default), for models that ship none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turn format, for Gemma files that ship no template (llama.cpp's built-in `gemma`
/// template): `<start_of_turn>ROLE\n...<end_of_turn>\n` with the assistant's role named `model`,
/// a system message's text put at the start of the next turn, BOS first.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\n\n' %}{% else %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' + ns.system + message['content'] + '<end_of_turn>\n' }}{% set ns.system = '' %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source` once; a syntax error names the line.
    pub fn new(source: &str) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        // Syntax settings apply at compile time, so they come before the template.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", python_tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(|e| ChatError::Syntax(describe(&e)))?;
        Ok(ChatTemplate { env })
    }

    /// The model's template, or for a model that ships none the built-in one of its family
    /// (Gemma's turn format for `gemma3`, else ChatML), with a line saying which was chosen.
    pub fn for_model(source: Option<&str>, architecture: &str) -> Result<(ChatTemplate, Option<&'static str>), ChatError> {
        match (source, architecture) {
            (Some(src), _) => Ok((ChatTemplate::new(src)?, None)),
            (None, "gemma3") => Ok((ChatTemplate::new(GEMMA_TEMPLATE)?, Some("the model has no chat template; using Gemma's turn format"))),
            (None, _) => Ok((ChatTemplate::chatml(), Some("the model has no chat template; using ChatML"))),
        }
    }

    /// The ChatML fallback template.
    pub fn chatml() -> ChatTemplate {
        // CHATML_TEMPLATE is a constant tested to compile; an error here is a bug in this file.
        match ChatTemplate::new(CHATML_TEMPLATE) {
            Ok(template) => template,
            Err(e) => unreachable!("built-in ChatML template: {e}"),
        }
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the opening of an
    /// assistant turn, ready for the model to continue.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool, bos_token: &str, eos_token: &str) -> Result<String, ChatError> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| ChatError::Render(describe(&e)))?;
        let context = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
            tools => Value::from(()),
            documents => Value::from(()),
        };
        template.render(context).map_err(|e| ChatError::Render(describe(&e)))
    }
}

/// A rendered conversation: the prompt text, and where the messages' own text lies in it.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedChat {
    /// The prompt.
    pub text: String,
    /// Byte ranges of `text` that are the messages' text, in order.
    pub content: Vec<std::ops::Range<usize>>,
}

impl ChatTemplate {
    /// Renders `messages` like [`ChatTemplate::render`] and also says where each message's text
    /// lies, so that it can be tokenized as plain text: a user who writes `<|im_end|>` gets
    /// those characters, not the control token. Only the template's own markers are special.
    ///
    /// The template is rendered with a marker in place of each message's text, then the texts
    /// are put back. If the template changes the text of its messages (trims it, say), so that
    /// this is not the plain rendering, each message is looked up in the plain rendering
    /// instead; a message that cannot be found is an error rather than a risk.
    pub fn render_marked(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<RenderedChat, ChatError> {
        let plain = self.render(messages, add_generation_prompt, bos_token, eos_token)?;
        let marked: Vec<ChatMessage> =
            messages.iter().enumerate().map(|(i, m)| ChatMessage { role: m.role.clone(), content: format!("\u{E000}{i}\u{E001}") }).collect();
        let rendered = self.render(&marked, add_generation_prompt, bos_token, eos_token)?;
        let mut text = String::with_capacity(plain.len());
        let mut content = Vec::with_capacity(messages.len());
        let mut rest = rendered.as_str();
        while let Some(open) = rest.find('\u{E000}') {
            let after = &rest[open + '\u{E000}'.len_utf8()..];
            let Some(close) = after.find('\u{E001}') else { break };
            let Some(message) = after[..close].parse::<usize>().ok().and_then(|i| messages.get(i)) else { break };
            text.push_str(&rest[..open]);
            content.push(text.len()..text.len() + message.content.len());
            text.push_str(&message.content);
            rest = &after[close + '\u{E001}'.len_utf8()..];
        }
        text.push_str(rest);
        if text == plain {
            return Ok(RenderedChat { text, content });
        }
        let mut content = Vec::with_capacity(messages.len());
        let mut at = 0;
        for m in messages {
            let needle = m.content.trim();
            if needle.is_empty() {
                continue;
            }
            let Some(pos) = plain[at..].find(needle) else {
                return Err(ChatError::Render(format!(
                    "the chat template rewrites the text of a {} message, so its text cannot be kept apart from the template's control tokens",
                    m.role
                )));
            };
            content.push(at + pos..at + pos + needle.len());
            at += pos + needle.len();
        }
        Ok(RenderedChat { text: plain, content })
    }

    /// The prompt tokens of `messages`: rendered, the template's control tokens parsed, the
    /// messages' text always plain ([`ChatTemplate::render_marked`]).
    pub fn encode(&self, tokenizer: &tokenizer::Tokenizer, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>, ChatError> {
        let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i)).unwrap_or("").to_string();
        let (bos, eos) = (token_text(tokenizer.bos_id()), token_text(tokenizer.eos_id()));
        let rendered = self.render_marked(messages, add_generation_prompt, &bos, &eos)?;
        Ok(tokenizer.encode_with_plain_spans(&rendered.text, &rendered.content))
    }
}

/// An error's message with its template line, when minijinja knows it.
fn describe(e: &Error) -> String {
    match (e.detail(), e.line()) {
        (Some(detail), Some(line)) => format!("{detail} (line {line})"),
        (Some(detail), None) => detail.to_string(),
        (None, Some(line)) => format!("{} (line {line})", e.kind()),
        (None, None) => e.kind().to_string(),
    }
}

/// `raise_exception(msg)`: templates call it to reject a conversation (e.g. roles that do not
/// alternate); it becomes a render error carrying `msg`.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current date. transformers uses local time; we use UTC so a
/// rendering does not depend on the machine's time zone.
fn strftime_now(format: &str) -> Result<String, Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("clock before 1970: {e}")))?;
    strftime_utc(format, now.as_secs() as i64)
}

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Formats a Unix time (UTC) with the strftime directives chat templates use:
/// %Y %y %m %d %e %j %H %I %M %S %p %b %B %a %A %%, plus glibc's %-d style (no padding).
fn strftime_utc(format: &str, unix_seconds: i64) -> Result<String, Error> {
    let days = unix_seconds.div_euclid(86_400);
    let seconds_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (seconds_of_day / 3600, seconds_of_day / 60 % 60, seconds_of_day % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (index 3).
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let number = |value: i64, width: usize| {
            if unpadded {
                value.to_string()
            } else {
                format!("{value:0width$}")
            }
        };
        let piece = match spec {
            Some('Y') => year.to_string(),
            Some('y') => number(year.rem_euclid(100), 2),
            Some('m') => number(month, 2),
            Some('d') => number(day, 2),
            Some('e') => format!("{day:>2}"),
            Some('j') => number(day_of_year, 3),
            Some('H') => number(hour, 2),
            Some('I') => number(hour12, 2),
            Some('M') => number(minute, 2),
            Some('S') => number(second, 2),
            Some('p') => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            Some('B') => MONTHS[(month - 1) as usize].to_string(),
            Some('b') => MONTHS[(month - 1) as usize][..3].to_string(),
            Some('A') => WEEKDAYS[weekday].to_string(),
            Some('a') => WEEKDAYS[weekday][..3].to_string(),
            Some('%') => "%".to_string(),
            other => {
                let shown = other.map_or(String::new(), String::from);
                return Err(Error::new(ErrorKind::InvalidOperation, format!("strftime_now: unsupported directive %{shown}")));
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Days since 1970-01-01 -> (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) -> days since 1970-01-01, the inverse of `civil_from_days`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
/// minijinja's own filter writes compact JSON with HTML-safe escapes (`\u003c` for `<`), which
/// would change the prompt text of tool-calling templates.
fn python_tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, indent, 0)?;
    // Safe: JSON text must not be HTML-escaped again should autoescaping be on.
    Ok(Value::from_safe_string(out))
}

fn write_json(out: &mut String, value: &Value, indent: Option<usize>, depth: usize) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    // Python's separators: ", " and ": " without indent, "," and ": " with it.
    let item_separator = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let text = value.to_string();
            match f64::try_from(value.clone()) {
                Ok(f) if !f.is_finite() => out.push_str(if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }),
                _ => out.push_str(&text),
            }
        }
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                write_json(out, item, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                write_json_string(out, &key.to_string());
                out.push_str(": ");
                write_json(out, &value.get_item(key)?, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        other => {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: cannot serialize a {other}")));
        }
    }
    Ok(())
}

/// A JSON string literal as Python writes it with ensure_ascii=False: non-ASCII kept as is.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One rendering by Python jinja2 (see tests/fixtures/make_chat_goldens.py).
    #[derive(serde::Deserialize)]
    struct Golden {
        template: String,
        messages: Vec<ChatMessage>,
        add_generation_prompt: bool,
        bos_token: String,
        eos_token: String,
        expected: Option<String>,
        error: Option<String>,
    }

    const SMOLLM2: &str = include_str!("../tests/fixtures/smollm2_chat_template.jinja");

    fn fixture(name: &str) -> &'static str {
        match name {
            "smollm2_chat_template.jinja" => SMOLLM2,
            "chatml.jinja" => include_str!("../tests/fixtures/chatml.jinja"),
            "features.jinja" => include_str!("../tests/fixtures/features.jinja"),
            other => panic!("unknown fixture {other}"),
        }
    }

    fn message(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.to_string(), content: content.to_string() }
    }

    #[test]
    fn smollm2_single_user_message_gets_default_system_prompt() {
        let template = ChatTemplate::new(SMOLLM2).unwrap();
        let got = template.render(&[message("user", "Hi")], true, "<|im_start|>", "<|im_end|>").unwrap();
        let want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(got, want);
    }

    #[test]
    fn renderings_match_python_jinja2_goldens() {
        let goldens: Vec<Golden> = serde_json::from_str(include_str!("../tests/fixtures/chat_goldens.json")).unwrap();
        assert_eq!(goldens.len(), 7);
        for g in &goldens {
            let template = ChatTemplate::new(fixture(&g.template)).unwrap();
            let got = template.render(&g.messages, g.add_generation_prompt, &g.bos_token, &g.eos_token);
            match (&g.expected, &g.error) {
                (Some(want), _) => {
                    assert_eq!(got.as_ref(), Ok(want), "{} {:?}", g.template, g.messages)
                }
                (None, Some(error)) => match got {
                    Err(ChatError::Render(message)) => {
                        assert!(message.contains(error.as_str()), "{message}")
                    }
                    other => panic!("{}: expected error {error:?}, got {other:?}", g.template),
                },
                (None, None) => panic!("golden without expected or error"),
            }
        }
    }

    #[test]
    fn chatml_fallback_is_the_fixture_template() {
        assert_eq!(CHATML_TEMPLATE, fixture("chatml.jinja"));
        let got = ChatTemplate::chatml().render(&[message("system", "Be brief."), message("user", "Hi")], true, "", "").unwrap();
        assert_eq!(got, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn syntax_error_is_a_clear_error_with_line() {
        let Err(ChatError::Syntax(message)) = ChatTemplate::new("line one\n{% for m in messages %}{{ m.content }}") else {
            panic!("an unclosed for must not compile");
        };
        assert!(message.contains("line"), "{message}");
        assert!(message.contains("endfor") || message.contains("end of input"), "{message}");
    }

    #[test]
    fn raise_exception_becomes_render_error_with_its_message() {
        let template = ChatTemplate::new("{{ raise_exception('Conversation roles must alternate') }}").unwrap();
        let err = template.render(&[], false, "", "").unwrap_err();
        assert!(matches!(&err, ChatError::Render(m) if m.contains("Conversation roles must alternate")), "{err}");
    }

    #[test]
    fn strftime_matches_python_time_strftime() {
        // Python: time.strftime(FORMAT, time.gmtime(t))
        const FORMAT: &str = "%Y-%m-%d %H:%M:%S %a %A %b %B %j %y %I %p|%e|%-d %-m|%%";
        let cases = [
            (0, "1970-01-01 00:00:00 Thu Thursday Jan January 001 70 12 AM| 1|1 1|%"),
            (951782400, "2000-02-29 00:00:00 Tue Tuesday Feb February 060 00 12 AM|29|29 2|%"),
            (1700000000, "2023-11-14 22:13:20 Tue Tuesday Nov November 318 23 10 PM|14|14 11|%"),
            (4102444799, "2099-12-31 23:59:59 Thu Thursday Dec December 365 99 11 PM|31|31 12|%"),
            (-86400, "1969-12-31 00:00:00 Wed Wednesday Dec December 365 69 12 AM|31|31 12|%"),
        ];
        for (t, want) in cases {
            assert_eq!(strftime_utc(FORMAT, t).unwrap(), want, "t = {t}");
        }
        assert!(strftime_utc("%Q", 0).is_err());
        assert!(strftime_utc("trailing %", 0).is_err());
    }

    #[test]
    fn strftime_now_renders_a_plausible_date() {
        let template = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}").unwrap();
        let got = template.render(&[], false, "", "").unwrap();
        let year: i64 = got[got.len() - 4..].parse().unwrap();
        assert!(got.len() == 11 && year >= 2024, "{got}");
    }

    #[test]
    fn tojson_escapes_like_python_not_html() {
        let template = ChatTemplate::new("{{ messages[0].content | tojson }}").unwrap();
        let got = template.render(&[message("user", "<b>\"x\" & \u{1}</b>")], false, "", "").unwrap();
        assert_eq!(got, r#""<b>\"x\" & \u0001</b>""#);
    }

    #[test]
    fn gemma_turn_format_merges_the_system_text_and_names_the_model() {
        let (t, note) = ChatTemplate::for_model(None, "gemma3").unwrap();
        assert!(note.unwrap().contains("Gemma"));
        let m = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
        let text =
            t.render(&[m("system", "Be brief."), m("user", "Hi"), m("assistant", "Hello"), m("user", "Why?")], true, "<bos>", "<eos>").unwrap();
        assert_eq!(
            text,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
        assert!(ChatTemplate::for_model(None, "llama").unwrap().1.unwrap().contains("ChatML"));
        assert!(ChatTemplate::for_model(Some("{{ messages[0]['content'] }}"), "gemma3").unwrap().1.is_none());
    }
}
