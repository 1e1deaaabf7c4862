//! `ferrolm bench -d DEPTH` (llama-bench's -d): pp and tg measured with DEPTH tokens already in
//! the cache; the context it needs is checked.

mod common;

use common::Fx;

#[test]
fn bench_at_a_depth_reports_it_and_checks_the_context() {
    let fx = Fx::new();
    let run = fx.run_with_stdin(&["bench", "--model", fx.tiny(), "-t", "1", "-p", "4", "-n", "3", "-d", "40", "-r", "1", "--json"], None);
    run.ok();
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert_eq!(v["depth"].as_u64(), Some(40));
    assert!(v["pp"].as_f64().unwrap() > 0.0 && v["tg"].as_f64().unwrap() > 0.0, "{v}");
    let text = fx.run_with_stdin(&["bench", "--model", fx.tiny(), "-t", "1", "-p", "4", "-n", "3", "-d", "40", "-r", "1"], None);
    text.ok();
    assert!(text.stdout.contains("pp4 @ d40") && text.stdout.contains("tg3 @ d40"), "{}", text.stdout);
    // Tests that run past the context (256 positions here), as llama-bench's: measured, with a note.
    let past = fx.run_with_stdin(&["bench", "--model", fx.tiny(), "-t", "1", "-p", "16", "-n", "3", "-d", "250", "-r", "1", "--json"], None);
    past.ok();
    assert!(past.stderr.contains("run past the model's context length 256"), "{}", past.stderr);
    // A depth past the model's context: a clear error.
    let err = fx.run_with_stdin(&["bench", "--model", fx.tiny(), "-t", "1", "-p", "4", "-n", "3", "-d", "100000000", "-r", "1"], None);
    assert_ne!(err.code, Some(0));
    assert!(err.stderr.contains("exceeds the model's context length"), "{}", err.stderr);
}
