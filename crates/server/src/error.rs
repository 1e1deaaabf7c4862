//! Errors as OpenAI sends them: `{"error": {"message", "type", "param", "code"}}` with the
//! matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::SubmitError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }

    /// 400, naming the field at fault.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
        ApiError { param: param.map(str::to_string), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing or wrong API key: send the key given to --api-key as `Authorization: Bearer KEY`",
            )
        }
    }

    /// 404 for a path.
    pub fn not_found(path: &str) -> ApiError {
        ApiError {
            code: Some("not_found"),
            ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no such endpoint: {path} (see /openapi.json)"))
        }
    }

    /// 404 for a model.
    pub fn unknown_model(asked: &str, served: &str) -> ApiError {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("the model {asked:?} does not exist here: this server runs {served:?}"),
            )
        }
    }

    /// 404 for `/v1/embeddings` on a server started without an embedding model.
    pub fn no_embedding_model() -> ApiError {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "this server has no embedding model: start it with --embedding-model DIR (a sentence-transformers folder) \
                 or --embedding-model default (all-MiniLM-L6-v2)",
            )
        }
    }

    /// 429: too many requests waiting, retry in a second.
    pub fn queue_full(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(1),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// 413 for a body over the limit.
    pub fn body_too_large(limit: usize) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", format!("the request body is larger than {limit} bytes"))
    }

    /// 503 while shutting down.
    pub fn shutting_down() -> ApiError {
        ApiError { retry_after: Some(5), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is shutting down") }
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        let message = e.to_string();
        match e {
            SubmitError::QueueFull(_) => ApiError::queue_full(message),
            SubmitError::ShuttingDown => ApiError::shutting_down(),
            SubmitError::PromptTooLong { .. } => ApiError {
                param: Some("messages".into()),
                code: Some("context_length_exceeded"),
                ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", message)
            },
            SubmitError::EmptyPrompt => ApiError::bad_request(message, Some("prompt")),
            SubmitError::InvalidToken { .. } => ApiError::bad_request(message, Some("prompt")),
            SubmitError::TooManyChoices { .. } => ApiError::bad_request(message, Some("n")),
            SubmitError::Sampler(_) => ApiError::bad_request(message, None),
            SubmitError::Beam(_) => ApiError::bad_request(message, Some("num_beams")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE && self.code.is_none() {
            // The unread rest of the body stays on the connection: close it, so that a client
            // reusing the connection does not send its next request into it.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
