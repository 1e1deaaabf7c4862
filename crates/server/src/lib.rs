//! server: ferrolm over HTTP, following OpenAI's API.
//!
//! A thin layer over the [`engine`]: each handler checks its body ([`api`]), tokenizes, submits
//! to the engine, and turns the engine's events into a JSON answer or a stream of server-sent
//! events ([`respond`]). A client that disconnects drops its stream, which drops the engine
//! handles and cancels its sequences. Errors follow OpenAI's shape ([`error`]).
//!
//! Endpoints: `/v1/models`, `/v1/completions`, `/v1/chat/completions`, `/v1/embeddings` (when a
//! sentence encoder is loaded beside the LLM, [`embeddings`]), `/tokenize`,
//! `/detokenize`, `/health`, `/metrics` (Prometheus), `/openapi.json`, and a chat page at `/`.

pub mod api;
pub mod embeddings;
pub mod error;
mod openapi;
pub mod respond;

use crate::api::{DetokenizeRequest, Plan, Prompt, TokenizeRequest};
pub use crate::embeddings::EmbeddingModel;
use crate::error::ApiError;
use crate::respond::{Job, Kind, Out, Shape};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{Engine, Request as EngineRequest};
use generate::beam::{BeamConfig, LengthPenalty};
use generate::chat::ChatTemplate;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;
use tokio::sync::mpsc;

/// The most bytes of a request body.
pub const BODY_LIMIT: usize = 8 << 20;

/// `system_fingerprint` of chat answers: the program and its version.
pub const FINGERPRINT: &str = concat!("ferrolm-", env!("CARGO_PKG_VERSION"));

/// The chat page.
const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Where to listen.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
}

/// What every handler shares.
pub struct AppState {
    engine: Engine,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    model_id: String,
    api_key: Option<String>,
    n_vocab: usize,
    created: u64,
    /// The sentence encoder of `/v1/embeddings`, when one is loaded.
    embeddings: Option<Arc<EmbeddingModel>>,
}

impl AppState {
    /// The state of a server over `engine`.
    pub fn new(
        engine: Engine,
        tokenizer: Arc<Tokenizer>,
        template: ChatTemplate,
        model_id: String,
        api_key: Option<String>,
        n_vocab: usize,
    ) -> AppState {
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        AppState { engine, tokenizer, template, model_id, api_key, n_vocab, created, embeddings: None }
    }

    /// Serves `/v1/embeddings` with `model` (without one it answers 404).
    pub fn with_embeddings(mut self, model: EmbeddingModel) -> AppState {
        self.embeddings = Some(Arc::new(model));
        self
    }

    /// The engine (metrics, shutdown).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A number unique within this process (response ids).
pub(crate) fn unique_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    t.rotate_left(20) ^ n
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(protected)
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Listens, serves until Ctrl-C or SIGTERM, then stops taking requests (503), lets the running
/// ones finish, and returns. `on_ready` gets the address once listening.
pub fn serve(options: ServeOptions, state: AppState, on_ready: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferrolm-http")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|e| format!("cannot listen on {}:{}: {e} (is the port taken? pick another with --port)", options.host, options.port))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(state);
        on_ready(addr);
        let app = router(state.clone());
        axum::serve(listener, app).with_graceful_shutdown(drain_on_signal(state)).await.map_err(|e| format!("the server failed: {e}"))
    })
}

/// Resolves once a shutdown signal came and the engine finished what it had accepted.
async fn drain_on_signal(state: Arc<AppState>) {
    wait_for_signal().await;
    let m = state.engine.metrics().clone();
    eprintln!(
        "ferrolm serve: shutting down: new requests get 503; finishing {} running and {} waiting",
        m.running.load(Relaxed),
        m.waiting.load(Relaxed)
    );
    state.engine.shutdown();
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline && (m.running.load(Relaxed) > 0 || m.waiting.load(Relaxed) > 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last events reach their streams.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn require_key(State(state): State<Arc<AppState>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body's bytes: 413 over the limit.
async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        let too_large =
            std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit")) || e.to_string().contains("length limit");
        if too_large {
            ApiError::body_too_large(BODY_LIMIT)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"), None)
        }
    })
}

/// The body as `T`: 413 over the limit, 400 for invalid UTF-8 or JSON (naming what is wrong).
async fn read_json<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    api::parse_json(&read_body(body).await?)
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let mut data = vec![json!({"id": state.model_id, "object": "model", "created": state.created, "owned_by": "ferrolm"})];
    if let Some(e) = &state.embeddings {
        data.push(json!({"id": e.name(), "object": "model", "created": state.created, "owned_by": "ferrolm"}));
    }
    Json(json!({"object": "list", "data": data}))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.engine.is_closing() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"}))).into_response()
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.engine.metrics().render()).into_response()
}

async fn tokenize(State(state): State<Arc<AppState>>, body: Body) -> Result<Json<serde_json::Value>, ApiError> {
    let r: TokenizeRequest = read_json(body).await?;
    let tokens = if r.add_special {
        state.tokenizer.encode_with_special(&r.content, r.parse_special)
    } else {
        state.tokenizer.encode(&r.content, r.parse_special)
    };
    Ok(Json(json!({"tokens": tokens})))
}

async fn detokenize(State(state): State<Arc<AppState>>, body: Body) -> Result<Json<serde_json::Value>, ApiError> {
    let r: DetokenizeRequest = read_json(body).await?;
    let mut ids = Vec::with_capacity(r.tokens.len());
    for &t in &r.tokens {
        if t >= state.n_vocab as u64 {
            return Err(ApiError::bad_request(format!("token id {t} is outside the vocabulary of {} tokens", state.n_vocab), Some("tokens")));
        }
        ids.push(t as u32);
    }
    Ok(Json(json!({"content": state.tokenizer.decode(&ids, false)})))
}

fn check_model(state: &AppState, asked: &Option<String>) -> Result<(), ApiError> {
    match asked {
        Some(m) if !m.is_empty() && *m != state.model_id => Err(ApiError::unknown_model(m, &state.model_id)),
        _ => Ok(()),
    }
}

async fn chat(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let bytes = read_body(body).await?;
        let (r, messages, plan, logprobs) = api::chat_plan(&bytes, state.n_vocab, state.engine.config().max_seqs)?;
        check_model(&state, &r.sampling.model)?;
        let prompt = state.template.encode(&state.tokenizer, &messages, true).map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
        run(&state, Kind::Chat, "/v1/chat/completions", vec![prompt], plan, logprobs).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let bytes = read_body(body).await?;
        let (r, plan, logprobs) = api::completion_plan(&bytes, state.n_vocab, state.engine.config().max_seqs)?;
        check_model(&state, &r.sampling.model)?;
        let tok = &state.tokenizer;
        // A raw prompt is the client's own format: control tokens written in it are parsed.
        let prompts: Vec<Vec<u32>> = match r.prompt {
            Prompt::Text(t) => vec![tok.encode_with_special(&t, true)],
            Prompt::Texts(ts) => ts.iter().map(|t| tok.encode_with_special(t, true)).collect(),
            Prompt::Tokens(ids) => vec![ids],
            Prompt::TokenLists(lists) => lists,
        };
        if prompts.is_empty() || prompts.len() * plan.n > 128 {
            return Err(ApiError::bad_request("give 1 to 128 prompts (times n)", Some("prompt")));
        }
        run(&state, Kind::Completion, "/v1/completions", prompts, plan, logprobs).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn embeddings(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let model = state.embeddings.clone().ok_or_else(ApiError::no_embedding_model)?;
        let bytes = read_body(body).await?;
        let (r, texts, format) = embeddings::embedding_plan(&bytes, model.dim())?;
        // As the completion routes: a model other than the one served is a 404, none is fine.
        if let Some(asked) = r.model.as_deref().filter(|m| !m.is_empty() && *m != model.name()) {
            return Err(ApiError::unknown_model(asked, model.name()));
        }
        if state.engine.is_closing() {
            return Err(ApiError::shutting_down());
        }
        let started = Instant::now();
        let (vectors, tokens) = model.embed(texts).await?;
        eprintln!("ferrolm serve: POST /v1/embeddings 200 texts={} prompt={tokens} total={:.3}s", vectors.len(), started.elapsed().as_secs_f64());
        Ok(Json(embeddings::embedding_response(model.name(), &vectors, format, tokens)))
    };
    result.await.map(IntoResponse::into_response).unwrap_or_else(IntoResponse::into_response)
}

/// Submits the prompts and answers, streamed or whole.
async fn run(
    state: &Arc<AppState>,
    kind: Kind,
    path: &'static str,
    prompts: Vec<Vec<u32>>,
    plan: Plan,
    logprobs: Option<usize>,
) -> Result<Response, ApiError> {
    if state.engine.is_closing() {
        return Err(ApiError::shutting_down());
    }
    let n_ctx = state.engine.config().n_ctx;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut handles = Vec::with_capacity(prompts.len());
    let n_prompts = prompts.len();
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    for (p, prompt) in prompts.into_iter().enumerate() {
        // The rest of the context when no limit is given; a limit past it is an error, as
        // OpenAI's (a prompt longer than the context is a 413, from the engine).
        let room = n_ctx.saturating_sub(prompt.len()) as u64;
        if let Some(m) = plan.max_tokens.filter(|&m| m > room && prompt.len() <= n_ctx) {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::bad_request(
                    format!(
                        "the context holds {n_ctx} tokens, but {} prompt tokens + max_tokens {m} exceed it: lower max_tokens to at most {room}",
                        prompt.len()
                    ),
                    Some("max_tokens"),
                )
            });
        }
        let mut options = plan.options.clone();
        options.max_tokens = plan.max_tokens.unwrap_or(room.max(1)) as usize;
        let tx = tx.clone();
        let sink = Box::new(move |event| tx.send((p, event)).is_ok());
        let beam = plan.beams.map(|(num_beams, length_penalty)| {
            let mut config = BeamConfig::new(num_beams, options.max_tokens, state.tokenizer.end_of_generation_ids().to_vec());
            config.length_penalty = LengthPenalty::Hf(length_penalty);
            config.num_return_sequences = plan.n;
            config
        });
        let request = EngineRequest { prompt, options, n: plan.n, beam };
        handles.push(state.engine.submit(request, sink)?);
    }
    drop(tx);
    let job = Job { rx, handles, prompts: n_prompts, n: plan.n };
    let mut shape = Shape::new(kind, state.model_id.clone(), logprobs, plan.include_usage, state.tokenizer.clone(), path, n_prompts, plan.n);
    shape.set_prompt_tokens(prompt_tokens);
    if plan.stream {
        Ok(stream(job, shape).into_response())
    } else {
        whole(job, shape).await
    }
}

/// Waits for every event and answers with one JSON object.
async fn whole(mut job: Job, mut shape: Shape) -> Result<Response, ApiError> {
    while let Some((p, event)) = job.rx.recv().await {
        match shape.take(p, job.n, event) {
            Out::Chunks(_) => {}
            Out::End(_) => return Ok(Json(shape.full()).into_response()),
            Out::Error(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the engine stopped before the request finished"))
}

/// Server-sent events: a chunk per event, `data: [DONE]` at the end. Dropping the stream (the
/// client went away) drops the job's handles, which cancels the engine requests.
fn stream(job: Job, shape: Shape) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        job: Job,
        shape: Shape,
        queue: std::collections::VecDeque<SseEvent>,
        ended: bool,
    }
    let start = St { job, shape, queue: Default::default(), ended: false };
    let events = futures_util::stream::unfold(start, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            if st.ended {
                return None;
            }
            let json_event = |v: serde_json::Value| SseEvent::default().data(v.to_string());
            match st.job.rx.recv().await {
                Some((p, event)) => match st.shape.take(p, st.job.n, event) {
                    Out::Chunks(chunks) => st.queue.extend(chunks.into_iter().map(json_event)),
                    Out::End(chunks) => {
                        st.queue.extend(chunks.into_iter().map(json_event));
                        st.queue.push_back(SseEvent::default().data("[DONE]"));
                        st.ended = true;
                    }
                    Out::Error(e) => {
                        st.queue.push_back(json_event(e.body()));
                        st.queue.push_back(SseEvent::default().data("[DONE]"));
                        st.ended = true;
                    }
                },
                None => {
                    let e = ApiError::internal("the engine stopped before the request finished");
                    st.queue.push_back(json_event(e.body()));
                    st.ended = true;
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
