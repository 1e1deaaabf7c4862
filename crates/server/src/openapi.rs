//! The OpenAPI 3.1 document of the server, served at `/openapi.json`.

use serde_json::{json, Value};

fn error_responses() -> Value {
    let e = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({"400": e, "401": e, "404": e, "413": e, "429": e, "503": e})
}

fn with_errors(ok: Value) -> Value {
    let mut r = error_responses();
    r["200"] = ok;
    r
}

/// The document.
pub fn document() -> Value {
    let sampling = json!({
        "model": {"type": "string", "description": "must be the id /v1/models lists, or absent"},
        "n": {"type": "integer", "minimum": 1, "maximum": 128, "default": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "seed": {"type": ["integer", "null"], "description": "int64; the same seed gives the same text whatever else runs"},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2, "default": 0},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2, "default": 0},
        "logit_bias": {"type": "object", "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}, "description": "token id (as a string) to bias; -100 bans"},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
        "stream": {"type": "boolean", "default": false},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "max_tokens": {"type": "integer", "minimum": 1, "description": "cut to the room left in the context"},
        "top_k": {"type": "integer", "description": "extension: keep the k most likely tokens; -1 or 0 off"},
        "min_p": {"type": "number", "minimum": 0, "maximum": 1, "description": "extension"},
        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "description": "extension: llama.cpp/HF repetition penalty"},
        "ignore_eos": {"type": "boolean", "description": "extension: keep generating past end-of-generation tokens"}
    });
    let mut chat_props = sampling.clone();
    chat_props["messages"] = json!({"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role"], "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]}
    }}, "description": "message text is never parsed for control tokens"});
    chat_props["max_completion_tokens"] = json!({"type": "integer", "minimum": 1});
    chat_props["logprobs"] = json!({"type": "boolean", "default": false});
    chat_props["top_logprobs"] = json!({"type": "integer", "minimum": 0, "maximum": 20});
    let mut completion_props = sampling;
    completion_props["prompt"] = json!({"oneOf": [
        {"type": "string"}, {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}}, {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}
    ]});
    completion_props["logprobs"] = json!({"type": "integer", "minimum": 0, "maximum": 5});
    let stream_or_json = |schema: &str| {
        json!({"description": "the completion, or with stream: true server-sent events of chunks ending with `data: [DONE]`",
               "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
                           "text/event-stream": {"schema": {"type": "string"}}}})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ferrolm", "version": env!("CARGO_PKG_VERSION"), "description": "An OpenAI-compatible server: continuous batching, prefix caching, streaming."},
        "paths": {
            "/v1/models": {"get": {"summary": "The model served", "responses": with_errors(json!({"description": "a list of one model", "content": {"application/json": {"schema": {"type": "object"}}}}))}},
            "/v1/chat/completions": {"post": {
                "summary": "Chat completion",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["messages"], "properties": chat_props}}}},
                "responses": with_errors(stream_or_json("ChatCompletion"))
            }},
            "/v1/completions": {"post": {
                "summary": "Text completion",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["prompt"], "properties": completion_props}}}},
                "responses": with_errors(stream_or_json("Completion"))
            }},
            "/v1/embeddings": {"post": {
                "summary": "Sentence embeddings (when the server runs with --embedding-model; 404 otherwise)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["input"], "properties": {
                    "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2048}],
                              "description": "texts; token ids are refused (400): the encoder has its own vocabulary"},
                    "model": {"type": "string", "description": "must be the embedding model's id (/v1/models lists it), or absent"},
                    "encoding_format": {"enum": ["float", "base64"], "default": "float", "description": "base64: the little-endian f32 bytes"},
                    "dimensions": {"type": "integer", "description": "must be the model's own dimension: vectors are not shortened"}}}}}},
                "responses": with_errors(json!({"description": "one embedding per text, in input order", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Embeddings"}}}}))
            }},
            "/tokenize": {"post": {
                "summary": "Token ids of a text",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["content"], "properties": {
                    "content": {"type": "string"}, "add_special": {"type": "boolean", "default": false}, "parse_special": {"type": "boolean", "default": false}}}}}},
                "responses": with_errors(json!({"description": "the ids", "content": {"application/json": {"schema": {"type": "object", "properties": {"tokens": {"type": "array", "items": {"type": "integer"}}}}}}}))
            }},
            "/detokenize": {"post": {
                "summary": "Text of token ids",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["tokens"], "properties": {"tokens": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}}}},
                "responses": with_errors(json!({"description": "the text", "content": {"application/json": {"schema": {"type": "object", "properties": {"content": {"type": "string"}}}}}}))
            }},
            "/health": {"get": {"summary": "200 while serving, 503 while shutting down", "responses": {"200": {"description": "ok"}, "503": {"description": "shutting down"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/": {"get": {"summary": "A chat page", "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "when the server runs with --api-key"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
                "Usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
                    "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer", "description": "prompt tokens taken from the prefix cache"}}}}},
                "ChatCompletion": {"type": "object", "properties": {"id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"}, "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "message": {"type": "object"}, "logprobs": {}, "finish_reason": {"enum": ["stop", "length"]}}}},
                    "usage": {"$ref": "#/components/schemas/Usage"}}},
                "Embeddings": {"type": "object", "properties": {"object": {"const": "list"}, "model": {"type": "string"},
                    "data": {"type": "array", "items": {"type": "object", "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"},
                        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "description": "base64"}]}}}},
                    "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer", "description": "tokens the encoder saw, special tokens included, after truncation"},
                        "total_tokens": {"type": "integer"}}}}},
                "Completion": {"type": "object", "properties": {"id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"}, "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": {}, "finish_reason": {"enum": ["stop", "length"]}}}},
                    "usage": {"$ref": "#/components/schemas/Usage"}}}
            }
        }
    })
}
