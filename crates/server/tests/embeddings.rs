//! `POST /v1/embeddings` over HTTP routing, with the tiny LLM and the tiny BERT (no download):
//! the vectors are the library's bits, as floats and as base64; usage counts the tokens the
//! encoder saw; what the route cannot serve is a 400, and a server without an encoder says 404.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use embed::{SentenceEmbedder, TOKEN_BUDGET};
use engine::{Engine, EngineConfig};
use generate::chat::ChatTemplate;
use gguf::GgufFile;
use kernels::{Level, ThreadPool};
use model::testing::{tiny_llama_gguf, TinySpec};
use model::tokenizer_gguf::tokenizer_from_gguf;
use model::Llama;
use serde_json::{json, Value};
use server::{router, AppState, EmbeddingModel};
use std::sync::Arc;
use tower::ServiceExt;

const NAME: &str = "tiny-bert";

fn state() -> AppState {
    let llama = Llama::from_file(GgufFile::from_bytes(tiny_llama_gguf(&TinySpec::default())).unwrap(), 1).unwrap();
    let tok = Arc::new(tokenizer_from_gguf(llama.file()).unwrap());
    let n_vocab = llama.config.n_vocab;
    let config = EngineConfig { n_ctx: 64, max_seqs: 4, max_batch_tokens: 64, kv_memory: 1 << 20, queue: 8, prefault_kv: false };
    let engine = Engine::start(llama, tok.clone(), config).unwrap();
    AppState::new(engine, tok, ChatTemplate::chatml(), "tiny-llama".into(), None, n_vocab)
}

/// The tiny BERT, loaded from a fresh folder (kept alive by the returned guard).
fn encoder() -> (SentenceEmbedder, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    embed::testing::write_tiny_model(dir.path());
    (SentenceEmbedder::load(dir.path()).unwrap(), dir)
}

fn app_with_encoder() -> (axum::Router, SentenceEmbedder, tempfile::TempDir) {
    let (model, dir) = encoder();
    let state = state().with_embeddings(EmbeddingModel::new(model.clone(), NAME.into(), ThreadPool::new(2), 4));
    (router(Arc::new(state)), model, dir)
}

async fn post(app: &axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn unbase64(s: &str) -> Vec<f32> {
    let value = |c: u8| "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".bytes().position(|a| a == c).unwrap() as u32;
    let mut bytes = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let n = quad.iter().enumerate().filter(|(_, &c)| c != b'=').fold(0, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        bytes.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn bits(vectors: &[Vec<f32>]) -> Vec<Vec<u32>> {
    vectors.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect()
}

#[tokio::test]
async fn one_string_is_one_embedding_with_its_token_count() {
    let (app, model, _dir) = app_with_encoder();
    let (status, body) = post(&app, "/v1/embeddings", json!({"input": "A man is eating food."})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], NAME);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!((&data[0]["object"], &data[0]["index"]), (&json!("embedding"), &json!(0)));
    let expected = model.embed(&ThreadPool::new(1), &["A man is eating food."]).unwrap();
    assert_eq!(bits(&[floats(&data[0]["embedding"])]), bits(&expected));
    let tokens = model.tokenize("A man is eating food.").len();
    assert_eq!(body["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
}

#[tokio::test]
async fn a_batch_is_the_librarys_embeddings_bit_for_bit_as_floats_and_base64() {
    let (app, model, _dir) = app_with_encoder();
    // The last text is longer than max_seq_length (12): usage counts the tokens after the cut.
    let texts = ["A man is eating food.", "A man is eating bread.", "Ein Mann isst.", "the quick brown fox jumps over the lazy dog again and again"];
    let expected = model.embed(&ThreadPool::new(2), &texts).unwrap();
    let sequences: Vec<Vec<u32>> = texts.iter().map(|t| model.tokenize(t)).collect();
    assert_eq!(bits(&expected), bits(&model.embed_ids(&ThreadPool::new(1), Level::current(), &sequences, TOKEN_BUDGET).unwrap()));
    let tokens: usize = sequences.iter().map(Vec::len).sum();
    assert!(sequences[3].len() == embed::testing::MAX_SEQ, "the long text is cut");

    let (status, body) = post(&app, "/v1/embeddings", json!({"input": texts, "model": NAME, "encoding_format": "float", "dimensions": 8})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.iter().map(|d| d["index"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(bits(&data.iter().map(|d| floats(&d["embedding"])).collect::<Vec<_>>()), bits(&expected));
    assert_eq!(body["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));

    let (status, body) = post(&app, "/v1/embeddings", json!({"input": texts, "encoding_format": "base64"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decoded: Vec<Vec<f32>> = body["data"].as_array().unwrap().iter().map(|d| unbase64(d["embedding"].as_str().unwrap())).collect();
    assert_eq!(bits(&decoded), bits(&expected));
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
}

#[tokio::test]
async fn what_the_route_cannot_serve_is_a_400_naming_the_field() {
    let (app, _model, _dir) = app_with_encoder();
    for (body, param) in [
        (json!({"input": []}), "input"),
        (json!({"input": [101, 2023, 102]}), "input"),
        (json!({"input": [[101, 102]]}), "input"),
        (json!({"input": 7}), "input"),
        (json!({"input": ["a", {"text": "b"}]}), "input"),
        (json!({"input": [""]}), "input"),
        (json!({}), "input"),
        (json!({"input": "a", "encoding_format": "int8"}), "encoding_format"),
        (json!({"input": "a", "dimensions": 4}), "dimensions"),
    ] {
        let (status, answer) = post(&app, "/v1/embeddings", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], param, "{body} -> {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
    }
    let (status, answer) = post(&app, "/v1/embeddings", json!({"input": "a", "model": "text-embedding-3-small"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn without_an_encoder_the_route_says_which_flag_adds_one() {
    let app = router(Arc::new(state()));
    let (status, answer) = post(&app, "/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "model_not_found");
    assert!(answer["error"]["message"].as_str().unwrap().contains("--embedding-model"), "{answer}");
}

#[tokio::test]
async fn models_lists_the_encoder_beside_the_llm() {
    let (app, _model, _dir) = app_with_encoder();
    let request = Request::get("/v1/models").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let body: Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()).unwrap();
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["tiny-llama", NAME]);
}
