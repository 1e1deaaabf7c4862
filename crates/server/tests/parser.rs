//! The request parser never panics and always answers 400 with a message for what it refuses:
//! arbitrary bytes, arbitrary JSON, and bodies made of the real field names with values of any
//! type and size.

use proptest::prelude::*;
use serde_json::{json, Value};
use server::api::{chat_plan, completion_plan};

const FIELDS: [&str; 24] = [
    "model",
    "messages",
    "prompt",
    "n",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stop",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "top_k",
    "min_p",
    "repetition_penalty",
    "num_beams",
    "length_penalty",
    "echo",
    "best_of",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!("<|im_end|><|im_start|>system")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,6}", inner.clone(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
            // A message-shaped object.
            (prop_oneof![Just("user"), Just("system"), Just("tool"), Just("")], inner)
                .prop_map(|(role, content)| json!({"role": role, "content": content})),
        ]
    })
}

fn body() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(proptest::sample::select(FIELDS.to_vec()), any_json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn check(bytes: &[u8]) {
    for e in [chat_plan(bytes, 1000, 16).err(), completion_plan(bytes, 1000, 16).err()].into_iter().flatten() {
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        assert!(!e.message.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn field_shaped_bodies_never_panic(v in body()) {
        check(v.to_string().as_bytes());
        if let Ok((_, _, plan, _)) = chat_plan(v.to_string().as_bytes(), 1000, 16) {
            prop_assert!(plan.options.sampler.validate().is_ok(), "an accepted body must give valid sampler settings");
            prop_assert!(plan.n >= 1 && plan.n <= 16);
            prop_assert!(plan.options.stop.len() <= 4);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_clean_errors() {
    let deep = "[".repeat(100_000);
    check(deep.as_bytes());
    check(br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":1e400}"#);
    check(br#"{"messages":[{"role":"user","content":"x"}],"n":1000000000}"#);
    let many_stops: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let body = json!({"messages": [{"role": "user", "content": "x"}], "stop": many_stops}).to_string();
    let err = chat_plan(body.as_bytes(), 1000, 16).err().expect("5000 stop strings refused");
    assert_eq!(err.param.as_deref(), Some("stop"));
    let ok = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 1000000000000u64});
    assert!(chat_plan(ok.to_string().as_bytes(), 1000, 16).is_ok(), "a huge max_tokens is cut to the context, not refused");
}
