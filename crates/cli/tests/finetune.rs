//! `finetune`, `--lora` and `merge` end to end on the tiny random model: training lowers the
//! loss, writes both adapter formats, resumes to the same bits, and bad input is a clean error.

mod common;

use common::Fx;
use serde_json::Value;

/// Eight chat records that teach the tiny model to answer "ok".
fn data(fx: &Fx) -> String {
    let lines: Vec<String> = (0..8)
        .map(|i| {
            serde_json::json!({"messages": [{"role": "user", "content": format!("say ok {i}")}, {"role": "assistant", "content": "ok"}]}).to_string()
        })
        .collect();
    fx.write("data.jsonl", (lines.join("\n") + "\n").as_bytes())
}

fn finetune(fx: &Fx, out: &str, extra: &[&str]) -> common::Run {
    let data = data(fx);
    let mut args = vec!["finetune", "--model", fx.tiny(), "--data", &data, "--eval", &data, "--out", out, "-t", "1", "--batch", "4", "--epochs", "3"];
    args.extend_from_slice(&["--lr", "1e-2", "--rank", "4", "--seq-len", "64"]);
    args.extend_from_slice(extra);
    fx.run(&args)
}

/// (step, train loss, held-out loss) of a run, from its last checkpoint.
fn history(out: &str) -> Vec<Value> {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(format!("{out}/checkpoint/checkpoint.json")).unwrap()).unwrap();
    meta["extra"]["history"].as_array().unwrap().clone()
}

#[test]
fn finetune_learns_writes_adapters_and_resumes_exactly() {
    let fx = Fx::new();
    let full = fx.path("full");
    let run = finetune(&fx, &full, &[]);
    run.ok();
    assert!(run.stdout.contains("trained 6 steps"), "{}", run.stdout);
    let h = history(&full);
    assert_eq!(h.len(), 6);
    let (first, last) = (h[0][1].as_f64().unwrap(), h[5][1].as_f64().unwrap());
    assert!(last < 0.5 * first, "the loss falls: {first} -> {last}");
    for file in ["adapter_model.safetensors", "adapter_config.json", "adapter.gguf"] {
        assert!(std::path::Path::new(&format!("{full}/{file}")).exists(), "{file} written");
    }
    // Stopped after 2 steps, then resumed: the same losses to the bit, and the same adapter.
    let split = fx.path("split");
    let run = finetune(&fx, &split, &["--max-steps", "2"]);
    run.ok();
    assert!(run.stderr.contains("stopped at step 2 of 6"), "{}", run.stderr);
    assert_eq!(history(&split).len(), 2);
    finetune(&fx, &split, &["--resume"]).ok();
    assert_eq!(history(&split), h, "a resumed run continues the same loss curve");
    let weights = |dir: &str| std::fs::read(format!("{dir}/adapter_model.safetensors")).unwrap();
    assert_eq!(weights(&split), weights(&full));
    // Resuming with other settings is refused.
    finetune(&fx, &split, &["--resume", "--seed", "9"]).fails_with(&["other data or settings"]);
}

#[test]
fn adapters_apply_in_both_formats_and_merge() {
    let fx = Fx::new();
    let out = fx.path("adapter");
    finetune(&fx, &out, &[]).ok();
    let prompt = ["--prompt", "<|im_start|>user\nsay ok 3<|im_end|>\n<|im_start|>assistant\n", "--temperature", "0", "-n", "4"];
    let base = fx.generate(fx.tiny(), &prompt);
    base.ok();
    let peft = fx.generate(fx.tiny(), &[&prompt[..], &["--lora", &out]].concat());
    peft.ok();
    assert_eq!(peft.stdout.trim_end(), "ok", "the adapter taught the answer; base said {:?}", base.stdout);
    let gguf = format!("{out}/adapter.gguf");
    let from_gguf = fx.generate(fx.tiny(), &[&prompt[..], &["--lora", &gguf]].concat());
    assert_eq!(from_gguf.ok().stdout, peft.stdout, "the GGUF adapter gives the same text");
    // Scale 0 is the base model.
    let zero = fx.generate(fx.tiny(), &[&prompt[..], &["--lora", &out, "--lora-scale", "0"]].concat());
    assert_eq!(zero.ok().stdout, base.stdout);
    // The merged model answers like the adapter.
    let merged = fx.path("merged.gguf");
    fx.run(&["merge", "--model", fx.tiny(), "--lora", &out, "--out", &merged]).ok();
    assert_eq!(fx.generate(&merged, &prompt).ok().stdout, peft.stdout);
}

#[test]
fn bad_finetune_input_is_a_clean_error() {
    let fx = Fx::new();
    let out = fx.path("out");
    let bad = fx.write(
        "bad.jsonl",
        b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\nnot json\n",
    );
    fx.run(&["finetune", "--model", fx.tiny(), "--data", &bad, "--out", &out, "-t", "1"]).fails_with(&["bad.jsonl:2"]);
    let data = data(&fx);
    fx.run(&["finetune", "--model", fx.tiny(), "--data", &data, "--out", &out, "--targets", "q,x"]).fails_with(&["unknown map \"x\""]);
    fx.run(&["finetune", "--model", fx.tiny(), "--data", &data, "--out", &out, "--rank", "0"]).fails_with(&["--rank"]);
    fx.run(&["finetune", "--model", fx.tiny(), "--data", &data, "--out", &out, "--resume"]).fails_with(&["no checkpoint"]);
    // An adapter for another model, or no adapter at all.
    let missing = fx.path("nothing-here");
    fx.generate(fx.tiny(), &["--prompt", "hi", "--lora", &missing]).fails_with(&["lora adapter"]);
    fx.run(&["merge", "--model", fx.tiny(), "--lora", &missing, "--out", &fx.path("m.gguf")]).fails_with(&["lora adapter"]);
}

#[test]
fn absurd_finetune_parameters_are_clean_errors() {
    let fx = Fx::new();
    let data = data(&fx);
    let out = fx.path("out");
    let base = ["finetune", "--model", fx.tiny(), "--data", data.as_str(), "--out", out.as_str(), "-t", "1"];
    for (extra, needle) in [
        (&["--eval-every", "0"][..], "--eval-every"),
        (&["--max-steps", "0"][..], "--max-steps"),
        (&["--epochs", "18446744073709551615"][..], "--epochs"),
        (&["--lr", "0"][..], "--lr"),
        (&["--dropout", "1"][..], "--dropout"),
        (&["--seq-len", "100000"][..], "--seq-len"),
    ] {
        fx.run(&[&base[..], extra].concat()).fails_with(&[needle]);
    }
}
