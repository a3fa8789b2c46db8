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
use keyserver_core::api;
use keyserver_core::{Error, ErrorCode};
use keyserver_http::server::body::{parse_body, read_body, wiped_body, RequestBody};
use keyserver_http::server::dispatch::{Dispatch, MAX_BATCH};

/// The JSON-RPC 2.0 endpoint. The envelope (batches, notifications, ids,
/// standard error codes) is handled here rather than by jsonrpsee's server,
/// because jsonrpsee's server logs whole request bodies (KEKs included) at
/// TRACE level.
pub(crate) fn router(dispatch: Arc<Dispatch>) -> Router {
    Router::new().route(
        JSONRPC_PATH,
        post(
            move |caller: Option<axum::Extension<keyserver_core::api::Caller>>,
                  headers: HeaderMap,
                  body: Body| {
                let dispatch = dispatch.bind(caller.map(|axum::Extension(c)| c));
                async move { handle_http(&dispatch, &headers, body).await }
            },
        ),
    )
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    text_response(
        status,
        to_text(|out| {
            let _ = serde_json::to_writer(out, value);
        }),
    )
}

fn text_response(status: StatusCode, text: String) -> Response {
    let mut response = (status, wiped_body(text)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A buffer for an answer's text that never grows in place: a
/// reallocation would leave a copy of a key in the memory it moves out of,
/// so it moves into a new one and wipes the old.
struct Wiping(Vec<u8>);

impl std::io::Write for Wiping {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > self.0.capacity() {
            // Doubling, as a Vec grows, but moving and wiping.
            let more = buf.len().max(self.0.capacity());
            keyserver_core::plugin::reserve_wiped(&mut self.0, more);
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The text `write` writes, in one pass.
fn to_text(write: impl FnOnce(&mut Wiping)) -> String {
    /// Most answers (all but `generate`'s and `list_keys`') fit at once.
    const FIRST: usize = 1024;
    let mut text = Wiping(Vec::with_capacity(FIRST));
    write(&mut text);
    // Only UTF-8 is written (from JSON values and UTF-8 strings).
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
            dispatch.log_refused("jsonrpc", "-", &e, start);
            let status = match e.kind() {
                Some(ErrorCode::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
                Some(ErrorCode::Busy) => StatusCode::SERVICE_UNAVAILABLE,
                Some(ErrorCode::Internal) => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            };
            return json_response(status, &error_response(Value::Null, rpc_error(&e)));
        }
    };
    if let Some(mut single) = Single::parse(&body) {
        drop(body);
        return single.answer(dispatch, deadline).await;
    }
    general(dispatch, body, deadline, start).await
}

/// Largest body [`Single`] reads: any call but a `get_key` with a KEK of
/// more than about 8,192 bits, which takes the general path.
const SINGLE_MAX: usize = 8192;

// A JSON value takes at least two bytes with what ends or separates it, so
// a body this small holds fewer values than the general path's scan allows:
// the single-call path needs no scan of its own.
const _: () = assert!(SINGLE_MAX <= 2 * codec::MAX_VALUES);

/// One call in its common form, `{"jsonrpc": "2.0", "method": m, "params":
/// [...] or {...}, "id": number, string or null}`, each member once and no
/// other, of a known method, read from the body in one typed pass: the
/// request builds no JSON tree but its parameters, and the answer is
/// written from the call's result directly. Everything else (a batch, a
/// notification, an escaped name, an unknown or repeated member, a large
/// body) takes the general path, which answers the same calls with the
/// same bytes (tested below). It owns what it needs, so the body (and its
/// share of the request memory) is let go before the call runs, as on the
/// general path.
struct Single {
    method: &'static api::Method,
    params: Wiped,
    id: Value,
}

/// A call object's members as read from the body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Members<'a> {
    jsonrpc: &'a str,
    method: &'a str,
    params: Wiped,
    id: Value,
}

/// A JSON value wiped when dropped: the parameters may hold a KEK, also
/// when the typed parse that read them fails on a later member (the body
/// then goes to the general path, which parses it again).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Wiped(Value);

impl Drop for Wiped {
    fn drop(&mut self) {
        codec::wipe(&mut self.0);
    }
}

impl Single {
    fn parse(body: &[u8]) -> Option<Self> {
        // An object only: serde would also read the members from an array
        // (`["2.0", "status", [], 1]`), which JSON-RPC reads as a batch.
        if body.len() > SINGLE_MAX || body.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let members: Members<'_> = serde_json::from_slice(body).ok()?;
        let method = api::method(members.method)?;
        let common = members.jsonrpc == "2.0"
            && matches!(
                members.id,
                Value::Null | Value::Number(_) | Value::String(_)
            )
            && matches!(members.params.0, Value::Array(_) | Value::Object(_));
        common.then_some(Single {
            method,
            params: members.params,
            id: members.id,
        })
    }

    async fn answer(&mut self, dispatch: &Dispatch, deadline: tokio::time::Instant) -> Response {
        let params = codec::params(self.method, Some(&mut self.params.0));
        let reply = dispatch
            .run_named_reply(
                "jsonrpc",
                self.method.name,
                params,
                codec::BRACKETS,
                deadline,
            )
            .await
            .map_err(|e| rpc_error(&e));
        match reply {
            Ok(reply) => text_response(
                StatusCode::OK,
                to_text(|out| {
                    // Writing into memory cannot fail.
                    let _ = write_answer(out, &self.id, reply);
                }),
            ),
            Err(error) => json_response(StatusCode::OK, &error_response(self.id.clone(), error)),
        }
    }
}

/// `{"id":ID,"jsonrpc":"2.0","result":RESULT}`: the members in the order of
/// the general path's (sorted) object.
fn write_answer(out: &mut Wiping, id: &Value, reply: api::Reply) -> std::io::Result<()> {
    use std::io::Write;
    out.write_all(br#"{"id":"#)?;
    serde_json::to_writer(&mut *out, id)?;
    out.write_all(br#","jsonrpc":"2.0","result":"#)?;
    codec::write_reply(out, reply)?;
    out.write_all(b"}")
}

/// For the fuzz target (`keyserver::testing::fuzz::jsonrpc_request`): the
/// call the single-call path reads from `body`, or its error; `None` when
/// it leaves the body to the general path.
pub fn fuzz_single(body: &[u8]) -> Option<keyserver_core::Result<api::Call>> {
    let mut single = Single::parse(body)?;
    let params = codec::params(single.method, Some(&mut single.params.0));
    Some(params.and_then(|p| api::Call::from_params(single.method.name, p, codec::BRACKETS)))
}

/// Any request: a single call or a batch, checked in full.
async fn general(
    dispatch: &Dispatch,
    body: RequestBody,
    deadline: tokio::time::Instant,
    start: Instant,
) -> Response {
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
            dispatch.log_refused("jsonrpc", "-", &e, start);
            return json_response(StatusCode::OK, &error_response(Value::Null, rpc_error(&e)));
        }
    };
    let answer = match &mut request {
        Value::Array(calls) if calls.is_empty() || calls.len() > MAX_BATCH => {
            let e = Error::protocol(
                ErrorCode::InvalidRequest,
                format!("a batch holds 1 to {MAX_BATCH} calls"),
            );
            dispatch.log_refused("jsonrpc", "-", &e, start);
            Some(error_response(Value::Null, rpc_error(&e)))
        }
        Value::Array(calls) => {
            let names = calls
                .iter()
                .filter_map(|c| c.get("method").and_then(Value::as_str));
            match dispatch.check_batch(names) {
                Err(e) => {
                    dispatch.log_refused("jsonrpc", "-", &e, start);
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
        dispatch.log_refused("jsonrpc", "-", &e, Instant::now());
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
        dispatch.log_refused("jsonrpc", "-", &e, Instant::now());
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
        dispatch.log_refused("jsonrpc", &method, &e, Instant::now());
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
    run(method, params, dispatch, deadline)
        .await
        .map(codec::to_json)
}

/// Runs a call of `method` with these parameters: its result, or the
/// JSON-RPC error object to answer with.
async fn run(
    method: &str,
    params: Option<&mut Value>,
    dispatch: &Dispatch,
    deadline: tokio::time::Instant,
) -> std::result::Result<api::Value, Value> {
    let Some(row) = api::method(method) else {
        let e = api::unknown_method();
        dispatch.log_refused("jsonrpc", "(unknown)", &e, Instant::now());
        return Err(rpc_error(&e));
    };
    let params = codec::params(row, params);
    dispatch
        .run_named("jsonrpc", method, params, codec::BRACKETS, deadline)
        .await
        .map_err(|e| rpc_error(&e))
}

#[cfg(test)]
mod tests {
    //! The single-call path against the general one: same calls, same bytes.

    use std::time::Duration;

    use super::*;
    use keyserver_core::api::{Call, MockKeyService, Reply, Status};
    use keyserver_core::{KeyId, WrappedDek};

    fn dispatch() -> Dispatch {
        let mut service = MockKeyService::new();
        service.expect_refused().returning(|_, _, _| ());
        service.expect_call_as().returning(|_, call| match call {
            Call::GetWrapped(id) if id == KeyId::from_bytes([1; 32]) => {
                Ok(Reply::Wrapped(WrappedDek::test_record(1)))
            }
            Call::GetWrapped(id) => Err(Error::NotFound { key_id: id }),
            Call::Contains(id) => Ok(Reply::Bool(id == KeyId::from_bytes([1; 32]))),
            Call::Status => Ok(Reply::Status(Status {
                keys: 1,
                version: "v\u{e9}\"1\"".into(),
                suite: "s".into(),
                storage: "m".into(),
                strength: 128,
                kek_alg: "rsa".into(),
                fips: false,
            })),
            _ => Err(Error::protocol(
                ErrorCode::InvalidRequest,
                "not in this test",
            )),
        });
        Dispatch::new(Arc::new(service), Duration::from_secs(5))
    }

    async fn bytes_of(response: Response) -> (StatusCode, Vec<u8>) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn general_answer(dispatch: &Dispatch, body: &str) -> (StatusCode, Vec<u8>) {
        let deadline = dispatch.deadline();
        let body = read_body(
            &HeaderMap::new(),
            Body::from(body.to_owned()),
            dispatch.body_limits(deadline),
        )
        .await
        .unwrap();
        bytes_of(general(dispatch, body, deadline, Instant::now()).await).await
    }

    #[tokio::test]
    async fn single_calls_are_answered_as_the_general_path_answers_them() {
        let dispatch = dispatch();
        let found = KeyId::from_bytes([1; 32]).to_string();
        let missing = KeyId::from_bytes([2; 32]).to_string();
        let call = |method: &str, params: &str, id: &str| {
            format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id":{id}}}"#)
        };
        let single = [
            call("get_wrapped", &format!(r#"["{found}"]"#), "1"),
            call(
                "get_wrapped",
                &format!(r#"{{"key_id":"{found}"}}"#),
                "\"abc\"",
            ),
            call("get_wrapped", &format!(r#"["{found}"]"#), "null"),
            call("get_wrapped", &format!(r#"["{found}"]"#), "-7"),
            call("get_wrapped", &format!(r#"["{found}"]"#), "1.5"),
            call("get_wrapped", &format!(r#"["{found}"]"#), "1e2"),
            call(
                "get_wrapped",
                &format!(r#"["{found}"]"#),
                "\"\u{43a}\u{43b}\"",
            ),
            call("get_wrapped", &format!(r#"["{found}"]"#), "\"a\\\"b\""),
            call("get_wrapped", &format!(r#"["{missing}"]"#), "2"),
            call("get_wrapped", r#"["not hex"]"#, "3"),
            call("get_wrapped", r#"[]"#, "4"),
            call("get_wrapped", &format!(r#"["{found}", 1]"#), "5"),
            call("get_wrapped", r#"[7]"#, "6"),
            call("get_wrapped", r#"{"other":"x"}"#, "7"),
            call("contains", &format!(r#"["{found}"]"#), "8"),
            call("contains", &format!(r#"["{missing}"]"#), "9"),
            call("status", "[]", "10"),
            call("status", "{}", "11"),
            format!(
                r#" {{ "id" : 12 , "params" : [ "{found}" ] , "method" : "get_wrapped" , "jsonrpc" : "2.0" }} "#
            ),
        ];
        for body in &single {
            let mut parsed = Single::parse(body.as_bytes())
                .unwrap_or_else(|| panic!("not taken by the single-call path: {body}"));
            let fast = bytes_of(parsed.answer(&dispatch, dispatch.deadline()).await).await;
            let general = general_answer(&dispatch, body).await;
            assert_eq!(
                String::from_utf8_lossy(&fast.1),
                String::from_utf8_lossy(&general.1),
                "{body}"
            );
            assert_eq!(fast, general, "{body}");
        }
        // The answer is what a client reads: a record that decodes.
        let (_, answer) = general_answer(&dispatch, &single[0]).await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["result"]["key_id"], found.as_str());
        assert_eq!(answer["id"], 1);

        // Everything else is left to the general path.
        let padded = format!(
            r#"{{"jsonrpc":"2.0","method":"status","params":[]{}, "id":1}}"#,
            " ".repeat(SINGLE_MAX)
        );
        let general_only = [
            format!("[{}]", single[0]),
            format!(r#"{{"jsonrpc":"2.0","method":"contains","params":["{found}"]}}"#),
            r#"{"jsonrpc":"2.0","method":"status","params":[],"id":1,"x":0}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"status","params":[],"id":1,"id":2}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"st\u0061tus","params":[],"id":1}"#.to_owned(),
            r#"{"jsonrpc":"2\u002e0","method":"status","params":[],"id":1}"#.to_owned(),
            call("status", "[]", "1").replace("2.0", "1.0"),
            call("status", "[]", "{}"),
            call("status", "[]", "true"),
            call("status", "[]", "[1]"),
            call("status", "null", "1"),
            call("status", "\"x\"", "1"),
            r#"{"jsonrpc":"2.0","method":"status","id":1}"#.to_owned(),
            call("no_such_method", "[]", "1"),
            format!("{} x", call("status", "[]", "1")),
            "not json".to_owned(),
            r#"["2.0","status",[],1]"#.to_owned(),
            format!(r#" [ "2.0", "get_wrapped", ["{found}"], 1 ]"#),
            padded,
        ];
        for body in &general_only {
            assert!(Single::parse(body.as_bytes()).is_none(), "{body}");
            // And the general path answers it (an error or a result).
            let (status, answer) = general_answer(&dispatch, body).await;
            assert!(status.is_success(), "{body}");
            assert!(!answer.is_empty() || body.contains("contains"), "{body}");
        }
    }
}
