//! The `/jsonrpc` endpoint: JSON-RPC 2.0 requests (single or batched) in,
//! through the codec and the dispatcher, answers out.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::{codec, JSONRPC_PATH};
use crate::api;
use crate::transports::http::body::{parse_body, read_body, wiped_body, RequestBody};
use crate::transports::http::dispatch::{log_refused, Dispatch, MAX_BATCH};
use crate::{Error, ErrorCode};

/// The JSON-RPC 2.0 endpoint. The envelope (batches, notifications, ids,
/// standard error codes) is handled here rather than by jsonrpsee's server,
/// because jsonrpsee's server logs whole request bodies (KEKs included) at
/// TRACE level.
pub(crate) fn router(dispatch: Arc<Dispatch>) -> Router {
    Router::new().route(
        JSONRPC_PATH,
        post(move |headers: HeaderMap, body: Body| {
            let dispatch = Arc::clone(&dispatch);
            async move { handle_http(&dispatch, &headers, body).await }
        }),
    )
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, wiped_body(to_text(value))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `value` as JSON text, in one pass. The buffer never grows in place: a
/// reallocation would leave a copy of a key in the memory it moves out
/// of, so it moves into a new one and wipes the old.
fn to_text(value: &Value) -> String {
    /// Most answers (all but `generate`'s and `list_keys`') fit at once.
    const FIRST: usize = 1024;
    struct Wiping(Vec<u8>);
    impl std::io::Write for Wiping {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > self.0.capacity() {
                // Doubling, as a Vec grows, but moving and wiping.
                let more = buf.len().max(self.0.capacity());
                crate::plugin::reserve_wiped(&mut self.0, more);
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut text = Wiping(Vec::with_capacity(FIRST));
    let _ = serde_json::to_writer(&mut text, value);
    // serde_json writes UTF-8.
    String::from_utf8(std::mem::take(&mut text.0)).unwrap_or_default()
}

fn error_response(id: Value, error: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

async fn handle_http(dispatch: &Dispatch, headers: &HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let deadline = dispatch.deadline();
    let body = match read_body(headers, body, dispatch.body_limits(deadline)).await {
        Ok(body) => body,
        Err(e) => {
            log_refused("jsonrpc", "-", &e, start);
            let status = match e.kind() {
                Some(ErrorCode::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
                Some(ErrorCode::Busy) => StatusCode::SERVICE_UNAVAILABLE,
                Some(ErrorCode::Internal) => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            };
            return json_response(status, &error_response(Value::Null, rpc_error(&e)));
        }
    };
    // Scanned first (bounded: no value is built), then parsed; a large body
    // is handled on the blocking pool so the async workers keep serving.
    let parse = move |body: RequestBody| match codec::check_values(&body, codec::MAX_VALUES) {
        Err(codec::Refused::Syntax) => Err(Error::protocol(
            ErrorCode::ParseError,
            "parse error: the body is not JSON",
        )),
        Err(codec::Refused::TooMany) => Err(Error::protocol(
            ErrorCode::InvalidRequest,
            format!(
                "invalid request: more than {} JSON values",
                codec::MAX_VALUES
            ),
        )),
        Ok(()) => serde_json::from_slice::<Value>(&body).map_err(|_| {
            Error::protocol(ErrorCode::ParseError, "parse error: the body is not JSON")
        }),
    };
    let parsed = parse_body(body, deadline, parse).await;
    let mut request = match parsed {
        Ok(request) => request,
        Err(e) => {
            log_refused("jsonrpc", "-", &e, start);
            return json_response(StatusCode::OK, &error_response(Value::Null, rpc_error(&e)));
        }
    };
    let answer = match &mut request {
        Value::Array(calls) if calls.is_empty() || calls.len() > MAX_BATCH => {
            let e = Error::protocol(
                ErrorCode::InvalidRequest,
                format!("a batch holds 1 to {MAX_BATCH} calls"),
            );
            log_refused("jsonrpc", "-", &e, start);
            Some(error_response(Value::Null, rpc_error(&e)))
        }
        Value::Array(calls) => {
            let names = calls
                .iter()
                .filter_map(|c| c.get("method").and_then(Value::as_str));
            match dispatch.check_batch(names) {
                Err(e) => {
                    log_refused("jsonrpc", "-", &e, start);
                    Some(error_response(Value::Null, rpc_error(&e)))
                }
                Ok(()) => {
                    let mut answers = Vec::new();
                    for call in calls.iter_mut() {
                        answers.extend(handle_one(dispatch, call, deadline).await);
                    }
                    (!answers.is_empty()).then_some(Value::Array(answers))
                }
            }
        }
        single => handle_one(dispatch, single, deadline).await,
    };
    codec::wipe(&mut request);
    match answer {
        Some(mut answer) => {
            let response = json_response(StatusCode::OK, &answer);
            codec::wipe(&mut answer);
            response
        }
        // Only notifications: nothing to answer.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// One request object; `None` for a notification (no `id`).
async fn handle_one(
    dispatch: &Dispatch,
    call: &mut Value,
    deadline: tokio::time::Instant,
) -> Option<Value> {
    let Value::Object(fields) = call else {
        let e = Error::protocol(ErrorCode::InvalidRequest, "invalid request");
        log_refused("jsonrpc", "-", &e, Instant::now());
        return Some(error_response(Value::Null, rpc_error(&e)));
    };
    let id = fields.get("id").cloned();
    let valid_id = matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    );
    let version_ok = fields.get("jsonrpc") == Some(&Value::String("2.0".into()));
    let method = fields
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let params = fields.get_mut("params");
    let params_ok = matches!(params, None | Some(Value::Array(_) | Value::Object(_)));
    let (Some(method), true, true, true) = (method, valid_id, version_ok, params_ok) else {
        let e = Error::protocol(
            ErrorCode::InvalidRequest,
            "invalid request: expected {\"jsonrpc\": \"2.0\", \"method\": string, \"params\": \
             array or object, \"id\": number or string}",
        );
        log_refused("jsonrpc", "-", &e, Instant::now());
        return Some(error_response(
            if valid_id {
                id.unwrap_or(Value::Null)
            } else {
                Value::Null
            },
            rpc_error(&e),
        ));
    };
    if id.is_none() && (method == "generate" || method == "rotate") {
        // Its KEK could be handed to nobody: the key would be made, stored,
        // and never usable. Refused, and answered although a notification.
        let e = Error::protocol(
            ErrorCode::InvalidRequest,
            format!(
                "{method} cannot be a notification: its KEK would be lost; give the call an id"
            ),
        );
        log_refused("jsonrpc", &method, &e, Instant::now());
        return Some(error_response(Value::Null, rpc_error(&e)));
    }
    let result = handle(&method, params, dispatch, deadline).await;
    let id = id?;
    Some(match result {
        Ok(value) => json!({"jsonrpc": "2.0", "id": id, "result": value}),
        Err(error) => error_response(id, error),
    })
}

/// A JSON-RPC 2.0 error object.
fn rpc_error(error: &Error) -> Value {
    json!({"code": error.code(), "message": error.to_string()})
}

async fn handle(
    method: &str,
    params: Option<&mut Value>,
    dispatch: &Dispatch,
    deadline: tokio::time::Instant,
) -> std::result::Result<Value, Value> {
    let Some(row) = api::method(method) else {
        let e = api::unknown_method();
        log_refused("jsonrpc", "(unknown)", &e, Instant::now());
        return Err(rpc_error(&e));
    };
    let params = codec::params(row, params);
    match dispatch
        .run_named("jsonrpc", method, params, codec::BRACKETS, deadline)
        .await
    {
        Ok(value) => Ok(codec::to_json(value)),
        Err(e) => Err(rpc_error(&e)),
    }
}
