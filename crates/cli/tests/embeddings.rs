//! `embed`, `similarity` and `index` end to end, on a tiny random BERT folder (embed::testing,
//! D = 8) and on vector files written here, so nothing is downloaded; one test runs the real
//! all-MiniLM-L6-v2 when the golden tests have it (they fetch it in CI).
//!
//! Failures must be clean: exit code 1, stderr starting with `error:` and naming the file and line.

mod common;

use common::{Fx, Run};
use embed::testing::{write_tiny_model, D};
use embed::SentenceEmbedder;
use kernels::ThreadPool;
use retrieve::npy::NpyReader;

const TEXTS: [&str; 5] = ["A man is eating food.", "A man is eating bread.", "The girl is carrying a baby.", "", "東京"];

/// The fixture dir with the tiny model in `tiny-bert/` and the texts in `texts.jsonl` (ids on
/// all but the third line, one of them a number).
fn fixture() -> (Fx, String, String) {
    let fx = Fx::new();
    let model = fx.path("tiny-bert");
    write_tiny_model(std::path::Path::new(&model));
    let lines: Vec<String> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| match i {
            2 => serde_json::json!({ "text": t }).to_string(),
            4 => serde_json::json!({ "id": 42, "text": t, "lang": "ja" }).to_string(),
            _ => serde_json::json!({ "id": format!("doc-{i}"), "text": t }).to_string(),
        })
        .collect();
    // A blank line in the middle is skipped.
    let texts = fx.write("texts.jsonl", format!("{}\n\n{}\n", lines[..2].join("\n"), lines[2..].join("\n")).as_bytes());
    (fx, model, texts)
}

/// What the library gives for the texts.
fn library_embeddings(model: &str) -> Vec<Vec<f32>> {
    let model = SentenceEmbedder::load(std::path::Path::new(model)).unwrap();
    model.embed(&ThreadPool::new(1), &TEXTS).unwrap()
}

fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number") as f32).collect()
}

/// JSON lines of vectors: `{"id": "v{i}", "embedding": [...]}`.
fn vectors_file(fx: &Fx, name: &str, vectors: &[Vec<f32>]) -> String {
    let lines: Vec<String> =
        vectors.iter().enumerate().map(|(i, v)| serde_json::json!({ "id": format!("v{i}"), "embedding": v }).to_string()).collect();
    fx.write(name, (lines.join("\n") + "\n").as_bytes())
}

/// A deterministic set of `n` vectors of dimension `d`, with distinct cosines.
fn random_vectors(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if norm(a) == 0.0 || norm(b) == 0.0 {
        0.0
    } else {
        dot / (norm(a) * norm(b))
    }
}

// ---------------------------------------------------------------------------------------------
// embed
// ---------------------------------------------------------------------------------------------

#[test]
fn embed_prints_json_lines_with_ids_equal_to_the_library_bit_for_bit() {
    let (fx, model, texts) = fixture();
    let run = fx.run(&["embed", "--model", &model, "--input", &texts, "-t", "2"]);
    run.ok();
    let lines = json_lines(&run);
    let want = library_embeddings(&model);
    assert_eq!(lines.len(), TEXTS.len());
    let ids: Vec<Option<&str>> = lines.iter().map(|l| l.get("id").map(|i| i.as_str().expect("ids are strings"))).collect();
    assert_eq!(ids, [Some("doc-0"), Some("doc-1"), None, Some("doc-3"), Some("42")]);
    for (line, want) in lines.iter().zip(&want) {
        let got = floats(&line["embedding"]);
        assert_eq!(got.len(), D);
        // Printed in the shortest form that reads back to the same f32.
        assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{got:?} vs {want:?}");
    }
    assert!(run.stderr.is_empty(), "nothing on stderr when printing to stdout: {}", run.stderr);
}

#[test]
fn embed_writes_npy_and_json_lines_files() {
    let (fx, model, texts) = fixture();
    let npy = fx.path("vecs.npy");
    fx.run(&["embed", "--model", &model, "--input", &texts, "--out", &npy, "-t", "1"]).ok();
    let bytes = std::fs::read(&npy).unwrap();
    let mut reader = NpyReader::new(&bytes[..], Some(bytes.len() as u64)).unwrap();
    assert_eq!((reader.rows(), reader.cols()), (TEXTS.len(), D));
    assert_eq!(reader.read_all().unwrap(), library_embeddings(&model).concat());
    let jsonl = fx.path("vecs.jsonl");
    let run = fx.run(&["embed", "--model", &model, "--input", &texts, "--out", &jsonl, "-t", "1"]);
    run.ok();
    assert!(run.stdout.is_empty() && run.stderr.contains("wrote 5 embeddings of dimension 8"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap().lines().count(), TEXTS.len());
}

#[test]
fn embed_bad_input_fails_cleanly_naming_the_line() {
    let (fx, model, _) = fixture();
    let no_text = fx.write("no-text.jsonl", b"{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n");
    fx.run(&["embed", "--model", &model, "--input", &no_text]).fails_with(&["no-text.jsonl:2", "\"text\""]);
    let not_json = fx.write("bad.jsonl", b"{\"text\": \"fine\"}\n\nnot json\n");
    fx.run(&["embed", "--model", &model, "--input", &not_json]).fails_with(&["bad.jsonl:3", "not a JSON object"]);
    let bad_id = fx.write("bad-id.jsonl", b"{\"text\": \"x\", \"id\": [1]}\n");
    fx.run(&["embed", "--model", &model, "--input", &bad_id]).fails_with(&["bad-id.jsonl:1", "\"id\" must be a string or a number"]);
    fx.run(&["embed", "--model", &model, "--input", &fx.path("missing.jsonl")]).fails_with(&["cannot open", "missing.jsonl"]);
    let npy = fx.write("x.npy", b"whatever");
    fx.run(&["embed", "--model", &model, "--input", &npy]).fails_with(&["x.npy", "texts are wanted"]);
}

#[test]
fn serve_with_a_bad_embedding_model_fails_cleanly_before_loading_the_llm() {
    let (fx, _model, _texts) = fixture();
    // No --model: the LLM is never looked for, the encoder's folder is checked first.
    fx.run(&["serve", "--port", "0", "--embedding-model", &fx.path("nowhere")]).fails_with(&[
        "--embedding-model",
        "nowhere",
        "not a sentence-transformers model folder",
    ]);
    let run = fx.run(&["serve", "--port", "0", "--embedding-model", "default"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked") && run.stderr.contains("could not fetch the embedding model"), "{}", run.stderr);
}

#[test]
fn embed_bad_model_or_output_fails_cleanly_and_leaves_no_file() {
    let (fx, model, texts) = fixture();
    fx.run(&["embed", "--model", &fx.path("nowhere"), "--input", &texts]).fails_with(&["nowhere", "not a sentence-transformers model folder"]);
    // The default model is not in the test's cache and cannot be fetched (no Python): a clean error.
    let run = fx.run(&["embed", "--input", &texts]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked") && run.stderr.contains("error: could not fetch the embedding model"), "{}", run.stderr);
    assert!(run.stderr.contains("all-MiniLM-L6-v2 by hand"), "{}", run.stderr);
    let broken = fx.path("broken-bert");
    write_tiny_model(std::path::Path::new(&broken));
    std::fs::write(std::path::Path::new(&broken).join("model.safetensors"), b"garbage").unwrap();
    fx.run(&["embed", "--model", &broken, "--input", &texts]).fails_with(&["cannot load the embedding model", "broken-bert"]);
    fx.run(&["embed", "--model", &model, "--input", &texts, "--out", &fx.path("no/such/dir/v.npy")]).fails_with(&["cannot create"]);
    fx.run(&["embed", "--model", &model, "--input", &texts, "-t", "0"]).fails_with(&["--threads must be between 1 and 1024"]);
    let leftovers: Vec<_> =
        std::fs::read_dir(fx.dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---------------------------------------------------------------------------------------------
// similarity
// ---------------------------------------------------------------------------------------------

#[test]
fn similarity_of_texts_against_their_embeddings_has_a_unit_diagonal() {
    let (fx, model, texts) = fixture();
    let vecs = fx.path("vecs.jsonl");
    fx.run(&["embed", "--model", &model, "--input", &texts, "--out", &vecs, "-t", "1"]).ok();
    let run = fx.run(&["similarity", "--model", &model, &texts, &vecs, "-t", "2"]);
    run.ok();
    let out: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(out["ids_a"], serde_json::json!(["doc-0", "doc-1", null, "doc-3", "42"]));
    assert_eq!(out["ids_b"], out["ids_a"]);
    let want = library_embeddings(&model);
    let rows = out["cosine"].as_array().unwrap();
    assert_eq!(rows.len(), TEXTS.len());
    for (i, row) in rows.iter().enumerate() {
        let row = floats(row);
        assert_eq!(row.len(), TEXTS.len());
        for (j, c) in row.iter().enumerate() {
            assert!((*c as f64 - cosine(&want[i], &want[j])).abs() < 1e-5, "({i}, {j}): {c}");
        }
        assert!((row[i] - 1.0).abs() < 1e-5);
    }
}

#[test]
fn similarity_with_a_zero_vector_is_zero_and_inputs_are_read_not_written() {
    let fx = Fx::new();
    let a = vectors_file(&fx, "a.jsonl", &[vec![0.0, 0.0, 0.0], vec![1.0, 2.0, 2.0]]);
    let b = vectors_file(&fx, "b.jsonl", &[vec![3.0, 0.0, 4.0], vec![0.0, 0.0, 0.0], vec![-1.0, -2.0, -2.0]]);
    let before = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let run = fx.run(&["similarity", &a, &b, "-t", "1"]);
    run.ok();
    assert_eq!((std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()), before);
    let out: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let rows: Vec<Vec<f32>> = out["cosine"].as_array().unwrap().iter().map(floats).collect();
    assert_eq!(rows[0], [0.0, 0.0, 0.0], "a zero vector's cosine is 0, not NaN");
    assert_eq!(rows[1][1], 0.0);
    assert!((rows[1][0] - 11.0 / 15.0).abs() < 1e-6 && (rows[1][2] + 1.0).abs() < 1e-6, "{rows:?}");
    assert!(!run.stdout.contains("NaN") && !run.stdout.contains("null,null,null"));
}

#[test]
fn similarity_refuses_mismatched_or_mixed_files() {
    let fx = Fx::new();
    let a = vectors_file(&fx, "a.jsonl", &[vec![1.0, 0.0]]);
    let b = vectors_file(&fx, "b.jsonl", &[vec![1.0, 0.0, 0.0]]);
    fx.run(&["similarity", &a, &b]).fails_with(&["a.jsonl holds vectors of dimension 2", "b.jsonl of dimension 3"]);
    let mixed = fx.write("mixed.jsonl", b"{\"embedding\": [1, 2]}\n{\"text\": \"hello\"}\n");
    fx.run(&["similarity", &a, &mixed]).fails_with(&["mixed.jsonl:2", "\"embedding\""]);
    let ragged = fx.write("ragged.jsonl", b"{\"embedding\": [1, 2]}\n{\"embedding\": [1, 2, 3]}\n");
    fx.run(&["similarity", &a, &ragged]).fails_with(&["ragged.jsonl:2", "3 values, but the first one has 2"]);
    let huge = fx.write("huge.jsonl", b"{\"embedding\": [1e39, 2]}\n");
    fx.run(&["similarity", &a, &huge]).fails_with(&["huge.jsonl:1", "must be finite"]);
    let empty = fx.write("empty.jsonl", b"\n\n");
    fx.run(&["similarity", &a, &empty]).fails_with(&["empty.jsonl is empty"]);
}

// ---------------------------------------------------------------------------------------------
// index
// ---------------------------------------------------------------------------------------------

/// The query's hits as (id, score) from `index query --json` lines.
fn hits_of(line: &serde_json::Value) -> Vec<(String, f32)> {
    line["hits"].as_array().unwrap().iter().map(|h| (h["id"].as_str().unwrap().to_string(), h["score"].as_f64().unwrap() as f32)).collect()
}

#[test]
fn index_of_vectors_returns_the_brute_force_top_k() {
    let fx = Fx::new();
    let docs = random_vectors(300, 24, 1);
    let queries = random_vectors(7, 24, 2);
    let docs_path = vectors_file(&fx, "docs.jsonl", &docs);
    let queries_path = vectors_file(&fx, "queries.jsonl", &queries);
    let idx = fx.path("docs.idx");
    let run = fx.run(&["index", "build", "--vectors", &docs_path, "--out", &idx]);
    run.ok();
    assert!(run.stderr.contains("indexed 300 vectors of dimension 24 (model external)"), "{}", run.stderr);
    let run = fx.run(&["index", "query", &idx, "--vectors", &queries_path, "--k", "5", "--json", "-t", "2"]);
    run.ok();
    let lines = json_lines(&run);
    assert_eq!(lines.len(), queries.len());
    for (qi, (line, q)) in lines.iter().zip(&queries).enumerate() {
        assert_eq!(line["query"], format!("v{qi}"));
        let mut want: Vec<(usize, f64)> = docs.iter().enumerate().map(|(i, d)| (i, cosine(q, d))).collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        let hits = hits_of(line);
        let ids: Vec<String> = hits.iter().map(|h| h.0.clone()).collect();
        assert_eq!(ids, want[..5].iter().map(|(i, _)| format!("v{i}")).collect::<Vec<_>>(), "query {qi}");
        for (h, w) in hits.iter().zip(&want) {
            assert!((h.1 as f64 - w.1).abs() < 1e-5);
        }
    }
    // The plain output: rank, score, id.
    let run = fx.run(&["index", "query", &idx, "--vectors", &queries_path, "-k", "2"]);
    run.ok();
    assert!(run.stdout.starts_with("query: v0\n   1  "), "{}", run.stdout);
}

#[test]
fn index_ties_rank_the_earlier_entry_first_and_npy_rows_are_the_ids() {
    let fx = Fx::new();
    // Rows 1 and 3 are the same direction: equal scores, the lower row first.
    let rows: Vec<f32> = [[0.0f32, 1.0], [1.0, 0.0], [0.0, -1.0], [2.0, 0.0]].concat();
    let mut npy = Vec::new();
    retrieve::npy::write_npy_header(&mut npy, 4, 2).unwrap();
    retrieve::npy::write_npy_row(&mut npy, &rows).unwrap();
    let path = fx.write("docs.npy", &npy);
    let idx = fx.path("docs.idx");
    fx.run(&["index", "build", "--vectors", &path, "--out", &idx, "--model-name", "my-model"]).ok();
    let query = vectors_file(&fx, "q.jsonl", &[vec![5.0, 0.0]]);
    let run = fx.run(&["index", "query", &idx, "--vectors", &query, "--k", "3", "--json"]);
    run.ok();
    let hits = hits_of(&json_lines(&run)[0]);
    assert_eq!(hits, [("1".to_string(), 1.0), ("3".to_string(), 1.0), ("0".to_string(), 0.0)]);
}

#[test]
fn index_of_texts_is_queried_with_text_of_the_same_model_only() {
    let (fx, model, texts) = fixture();
    let idx = fx.path("texts.idx");
    let run = fx.run(&["index", "build", "--input", &texts, "--model", &model, "--out", &idx, "-t", "1"]);
    run.ok();
    assert!(run.stderr.contains("(model tiny-bert)"), "{}", run.stderr);
    // Each text finds itself first; the line without an id is named by its row.
    let run = fx.run(&["index", "query", &idx, "--model", &model, "--text", TEXTS[2], "--text", TEXTS[0], "--json", "-k", "2"]);
    run.ok();
    let lines = json_lines(&run);
    assert_eq!(lines[0]["query"], TEXTS[2]);
    let (first, second) = (hits_of(&lines[0]), hits_of(&lines[1]));
    assert_eq!((first[0].0.as_str(), second[0].0.as_str()), ("2", "doc-0"));
    assert!((first[0].1 - 1.0).abs() < 1e-5, "{first:?}");
    // Another model (a folder of another name), no model, an external index: refused, clearly.
    let other = fx.path("other-bert");
    write_tiny_model(std::path::Path::new(&other));
    fx.run(&["index", "query", &idx, "--model", &other, "--text", "x"]).fails_with(&[
        "built with the model \"tiny-bert\"",
        "\"other-bert\"",
        "--vectors",
    ]);
    fx.run(&["index", "query", &idx, "--text", "x"]).fails_with(&["built with the model \"tiny-bert\"", "--model DIR"]);
    let vecs = vectors_file(&fx, "v.jsonl", &random_vectors(3, D, 3));
    let external = fx.path("external.idx");
    fx.run(&["index", "build", "--vectors", &vecs, "--out", &external]).ok();
    fx.run(&["index", "query", &external, "--model", &model, "--text", "x"]).fails_with(&["external vectors", "query with --vectors"]);
    // Text queries from a file.
    let run = fx.run(&["index", "query", &idx, "--model", &model, "--input", &texts, "--json", "-k", "1"]);
    run.ok();
    let tops: Vec<String> = json_lines(&run).iter().map(|l| hits_of(l)[0].0.clone()).collect();
    assert_eq!(tops, ["doc-0", "doc-1", "2", "doc-3", "42"]);
}

#[test]
fn index_build_refuses_bad_vectors_and_leaves_no_file() {
    let fx = Fx::new();
    let out = fx.path("out.idx");
    let cases: [(&str, &[u8], &[&str]); 5] = [
        (
            "ragged.jsonl",
            b"{\"id\": \"a\", \"embedding\": [1, 2]}\n{\"id\": \"b\", \"embedding\": [1]}\n",
            &["ragged.jsonl:2", "1 values, but the first one has 2"],
        ),
        ("inf.jsonl", b"{\"id\": \"a\", \"embedding\": [1, 1e40]}\n", &["inf.jsonl:1", "must be finite"]),
        ("empty.jsonl", b"", &["empty.jsonl holds no vectors"]),
        ("texts.jsonl", b"{\"id\": \"a\", \"text\": \"hello\"}\n", &["texts.jsonl:1", "\"embedding\""]),
        ("bad.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<i4'}", &["bad.npy", "not a usable .npy file"]),
    ];
    for (name, bytes, needles) in cases {
        let path = fx.write(name, bytes);
        fx.run(&["index", "build", "--vectors", &path, "--out", &out]).fails_with(needles);
        assert!(!std::path::Path::new(&out).exists(), "{name}: a failed build left {out}");
    }
    let leftovers: Vec<_> =
        std::fs::read_dir(fx.dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Usage errors come from clap (exit 2): no source, --model-name without --vectors.
    let run = fx.run(&["index", "build", "--out", &out]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let run = fx.run(&["index", "build", "--input", "x.jsonl", "--model-name", "m", "--out", &out]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[test]
fn index_query_refuses_damaged_indexes_and_bad_queries() {
    let fx = Fx::new();
    let docs = vectors_file(&fx, "docs.jsonl", &random_vectors(10, 4, 5));
    let idx = fx.path("docs.idx");
    fx.run(&["index", "build", "--vectors", &docs, "--out", &idx]).ok();
    let bytes = std::fs::read(&idx).unwrap();
    let q = vectors_file(&fx, "q.jsonl", &random_vectors(1, 4, 6));
    let truncated = fx.write("truncated.idx", &bytes[..bytes.len() - 3]);
    fx.run(&["index", "query", &truncated, "--vectors", &q]).fails_with(&["truncated.idx", "truncated"]);
    let mut foreign = bytes.clone();
    foreign[..4].copy_from_slice(b"GGUF");
    let foreign = fx.write("foreign.idx", &foreign);
    fx.run(&["index", "query", &foreign, "--vectors", &q]).fails_with(&["foreign.idx", "not a ferrolm vector index"]);
    let mut newer = bytes.clone();
    newer[8] = 9;
    let newer = fx.write("newer.idx", &newer);
    fx.run(&["index", "query", &newer, "--vectors", &q]).fails_with(&["newer.idx", "version 9", "index build"]);
    fx.run(&["index", "query", &fx.path("none.idx"), "--vectors", &q]).fails_with(&["none.idx"]);
    let wide = vectors_file(&fx, "wide.jsonl", &random_vectors(1, 5, 7));
    fx.run(&["index", "query", &idx, "--vectors", &wide]).fails_with(&["wide.jsonl holds vectors of dimension 5", "dimension 4"]);
    fx.run(&["index", "query", &idx, "--vectors", &q, "--k", "0"]).fails_with(&["--k must be at least 1"]);
    // A zero query vector scores 0 against everything: the first k entries, no NaN.
    let zero = vectors_file(&fx, "zero.jsonl", &[vec![0.0; 4]]);
    let run = fx.run(&["index", "query", &idx, "--vectors", &zero, "--k", "3", "--json"]);
    run.ok();
    assert_eq!(hits_of(&json_lines(&run)[0]), [("v0".to_string(), 0.0), ("v1".to_string(), 0.0), ("v2".to_string(), 0.0)]);
    // k past the index's size gives every entry.
    let run = fx.run(&["index", "query", &idx, "--vectors", &q, "--k", "50", "--json"]);
    run.ok();
    assert_eq!(hits_of(&json_lines(&run)[0]).len(), 10);
}

#[test]
fn real_minilm_index_finds_the_paraphrase() {
    // all-MiniLM-L6-v2 itself, when the golden tests have it (CI fetches it; elsewhere skipped).
    let Some(dir) = embed::fetch::model_for_tests() else { return };
    let dir = dir.to_str().expect("utf-8 model path").to_string();
    let fx = Fx::new();
    let docs = fx.write(
        "docs.jsonl",
        b"{\"id\": \"food\", \"text\": \"A man is eating food.\"}\n{\"id\": \"horse\", \"text\": \"A man is riding a horse.\"}\n{\"id\": \"baby\", \"text\": \"The girl is carrying a baby.\"}\n",
    );
    let idx = fx.path("docs.idx");
    fx.run(&["index", "build", "--input", &docs, "--model", &dir, "--out", &idx, "-t", "2"]).ok();
    let run = fx.run(&[
        "index",
        "query",
        &idx,
        "--model",
        &dir,
        "--text",
        "Someone is having a meal.",
        "--text",
        "A woman holds an infant.",
        "--json",
        "-k",
        "1",
    ]);
    run.ok();
    let tops: Vec<String> = json_lines(&run).iter().map(|l| hits_of(l)[0].0.clone()).collect();
    assert_eq!(tops, ["food", "baby"]);
    // The index records the model by its folder's name, all-MiniLM-L6-v2 for the default model.
    assert!(retrieve::VectorIndex::open(&idx).unwrap().model().contains("MiniLM") || std::env::var_os("FERROLM_EMBED_MODEL").is_some());
}
