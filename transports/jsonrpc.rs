//! JSON-RPC 2.0 (jsonrpsee): the `/jsonrpc` endpoint of the server, and the
//! `JsonRpc` client.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::middleware::RpcServiceBuilder;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use super::http::{
    error_from_wire, log_request, parse_strength, read_body, Call, Dispatch, Reply, INVALID_PARAMS,
    INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
};
use super::ClientOptions;
use crate::error::codes;
use crate::{Dek, Error, Kek, KeyId, Result, Status, Strength, Transport, WrappedDek};

/// The path JSON-RPC is served at.
pub const JSONRPC_PATH: &str = "/jsonrpc";

/// Largest number of calls in one batch.
const MAX_BATCH: usize = 64;

/// The JSON-RPC 2.0 endpoint. The envelope (batches, notifications, ids,
/// standard error codes) is handled here rather than by jsonrpsee's server,
/// because jsonrpsee's server logs whole request bodies (KEKs included) at
/// TRACE level; the error objects are jsonrpsee's types.
pub(crate) fn router(dispatch: Arc<Dispatch>, max_body: usize) -> Result<Router> {
    Ok(Router::new().route(
        JSONRPC_PATH,
        post(move |headers: HeaderMap, body: Body| {
            let dispatch = Arc::clone(&dispatch);
            async move { handle_http(&dispatch, max_body, &headers, body).await }
        }),
    ))
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(id: Value, error: ErrorObjectOwned) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

async fn handle_http(
    dispatch: &Dispatch,
    max_body: usize,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(headers, body, max_body).await {
        Ok(body) => body,
        Err(e) => {
            log_request::<()>(
                "jsonrpc",
                "-",
                None,
                &Err(Error::TooLarge {
                    size: 0,
                    limit: max_body as u64,
                }),
                Instant::now(),
            );
            let status = if e.code() == codes::TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return json_response(
                status,
                &error_response(Value::Null, rpc_error(e.code(), e.to_string())),
            );
        }
    };
    let Ok(mut request) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::OK,
            &error_response(
                Value::Null,
                rpc_error(PARSE_ERROR, "parse error: the body is not JSON"),
            ),
        );
    };
    let answer = match &mut request {
        Value::Array(calls) if calls.is_empty() || calls.len() > MAX_BATCH => Some(error_response(
            Value::Null,
            rpc_error(
                INVALID_REQUEST,
                format!("a batch holds 1 to {MAX_BATCH} calls"),
            ),
        )),
        Value::Array(calls) => {
            let mut answers = Vec::new();
            for call in calls.iter_mut() {
                answers.extend(handle_one(dispatch, call).await);
            }
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        single => handle_one(dispatch, single).await,
    };
    wipe_json(&mut request);
    match answer {
        Some(answer) => json_response(StatusCode::OK, &answer),
        // Only notifications: nothing to answer.
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// One request object; `None` for a notification (no `id`).
async fn handle_one(dispatch: &Dispatch, call: &mut Value) -> Option<Value> {
    let Value::Object(fields) = call else {
        return Some(error_response(
            Value::Null,
            rpc_error(INVALID_REQUEST, "invalid request"),
        ));
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
        return Some(error_response(
            if valid_id { id.unwrap_or(Value::Null) } else { Value::Null },
            rpc_error(INVALID_REQUEST, "invalid request: expected {\"jsonrpc\": \"2.0\", \"method\": string, \"params\": array or object, \"id\": number or string}"),
        ));
    };
    let result = handle(&method, params, dispatch).await;
    let id = id?;
    Some(match result {
        Ok(value) => json!({"jsonrpc": "2.0", "id": id, "result": value}),
        Err(error) => error_response(id, error),
    })
}

fn rpc_error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.into(), None::<()>)
}

async fn handle(
    method: &str,
    params: Option<&mut Value>,
    dispatch: &Dispatch,
) -> std::result::Result<Value, ErrorObjectOwned> {
    let start = Instant::now();
    if !matches!(
        method,
        "generate" | "get_key" | "get_wrapped" | "contains" | "status"
    ) {
        return Err(rpc_error(METHOD_NOT_FOUND, "unknown method"));
    }
    let call = match parse_call(method, params) {
        Ok(call) => call,
        Err(e) => {
            log_request::<()>(
                "jsonrpc",
                method,
                None,
                &Err(Error::Remote {
                    code: e.code(),
                    message: e.message().to_string(),
                }),
                start,
            );
            return Err(e);
        }
    };
    match dispatch.run("jsonrpc", call).await {
        Ok(reply) => Ok(reply_value(reply)),
        Err(e) => Err(rpc_error(e.code(), e.to_string())),
    }
}

/// Positional (`[x]`) or named (`{"name": x}`) parameters, parsed without
/// ever quoting them back (they may hold a KEK).
fn parse_call(
    method: &str,
    params: Option<&mut Value>,
) -> std::result::Result<Call, ErrorObjectOwned> {
    let bad = |expected: &str| {
        rpc_error(
            INVALID_PARAMS,
            format!("invalid parameters: expected {expected}"),
        )
    };
    let wire = |e: Error| rpc_error(e.code(), e.to_string());
    let mut none = Value::Null;
    let value = params.unwrap_or(&mut none);
    (|| {
        let (name, expected) = match method {
            "generate" => ("strength", "[] or [strength: int]"),
            "get_key" => ("kek", "[kek: string]"),
            "get_wrapped" | "contains" => ("key_id", "[key_id: string]"),
            _ => ("", "[]"),
        };
        let arg: Option<&mut Value> = match value {
            Value::Null => None,
            Value::Array(items) if items.is_empty() => None,
            Value::Array(items) if items.len() == 1 => items.first_mut(),
            Value::Object(map) if map.is_empty() => None,
            Value::Object(map) if map.len() == 1 && !name.is_empty() => {
                Some(map.get_mut(name).ok_or_else(|| bad(expected))?)
            }
            _ => return Err(bad(expected)),
        };
        match (method, arg) {
            ("generate", None) => Ok(Call::Generate(None)),
            ("generate", Some(Value::Number(n))) => {
                let bits = n.as_i64().ok_or_else(|| bad(expected))?;
                parse_strength(bits)
                    .map(|s| Call::Generate(Some(s)))
                    .map_err(wire)
            }
            ("get_key", Some(Value::String(pem))) => {
                let pem = Zeroizing::new(std::mem::take(pem));
                Kek::from_pem(&pem).map(Call::GetKey).map_err(wire)
            }
            ("get_wrapped", Some(Value::String(id))) => {
                id.parse().map(Call::GetWrapped).map_err(wire)
            }
            ("contains", Some(Value::String(id))) => id.parse().map(Call::Contains).map_err(wire),
            ("status", None) => Ok(Call::Status),
            _ => Err(bad(expected)),
        }
    })()
}

fn wipe_json(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_json),
        Value::Object(map) => map.values_mut().for_each(wipe_json),
        _ => {}
    }
}

fn reply_value(reply: Reply) -> Value {
    match reply {
        Reply::Kek(kek) => Value::String(kek.to_pem().to_string()),
        Reply::Dek(dek) => Value::String(BASE64.encode(dek.as_bytes())),
        Reply::Wrapped(record) => json!({
            "key_id": record.key_id().to_string(),
            "record": BASE64.encode(record.encode()),
        }),
        Reply::Bool(b) => Value::Bool(b),
        Reply::Status(status) => json!({
            "keys": status.keys,
            "version": status.version,
            "suite": status.suite,
            "storage": status.storage,
            "strength": status.strength,
        }),
    }
}

/// A JSON-RPC 2.0 client of a keyserver (`URL/jsonrpc`), over HTTP or HTTPS.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "cipher-rustcrypto")]
/// # async fn demo() -> keyserver::Result<()> {
/// use keyserver::{Encryption, KeyClient};
/// use keyserver::backends::RustCrypto;
/// use keyserver::transports::JsonRpc;
///
/// let client = KeyClient::new(JsonRpc::new("http://127.0.0.1:8731")?, RustCrypto::new());
/// let kek = client.generate().await?;
/// let sealed = client.encrypt(&kek, b"Stephan Richter").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct JsonRpc {
    base: String,
    client: HttpClient<jsonrpsee::http_client::RpcService<jsonrpsee::http_client::HttpBackend>>,
}

impl JsonRpc {
    /// A client of the server at `url` (`http://HOST:PORT` or `https://...`),
    /// with default options.
    ///
    /// # Errors
    /// [`Error::Transport`] for a URL that is not http(s) or TLS set-up errors.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_options(url, ClientOptions::default())
    }

    /// A client with explicit timeout and TLS options.
    ///
    /// # Errors
    /// As for [`JsonRpc::new`].
    pub fn with_options(url: &str, options: ClientOptions) -> Result<Self> {
        let base = super::base_url(url)?;
        // No RPC logger: jsonrpsee's logs the whole request (the KEK) at TRACE.
        let mut builder = HttpClientBuilder::default()
            .request_timeout(options.timeout)
            .set_rpc_middleware(RpcServiceBuilder::new());
        if base.starts_with("https://") {
            builder = builder.with_custom_cert_store(super::tls::client_config(&options.tls)?);
        }
        let client = builder
            .build(format!("{base}{JSONRPC_PATH}"))
            .map_err(|e| Error::Transport {
                message: "cannot build the JSON-RPC client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(JsonRpc { base, client })
    }

    async fn call(
        &self,
        method: &str,
        params: jsonrpsee::core::params::ArrayParams,
        key_id: Option<KeyId>,
    ) -> Result<Value> {
        self.client
            .request::<Value, _>(method, params)
            .await
            .map_err(|e| match e {
                ClientError::Call(obj) => {
                    error_from_wire(obj.code(), obj.message().to_string(), key_id)
                }
                ClientError::RequestTimeout => Error::Transport {
                    message: "the key server did not answer in time".into(),
                    source: None,
                },
                ClientError::ParseError(_) => garbage(),
                ClientError::Transport(e) => {
                    let text = e.to_string();
                    if text.contains("413") {
                        Error::Remote {
                            code: codes::TOO_LARGE,
                            message: "request too large".into(),
                        }
                    } else {
                        Error::Transport {
                            message: "cannot reach the key server".into(),
                            source: Some(e),
                        }
                    }
                }
                other => Error::Transport {
                    message: other.to_string(),
                    source: None,
                },
            })
    }
}

fn garbage() -> Error {
    Error::Transport {
        message: "the server's answer is not a valid JSON-RPC response".into(),
        source: None,
    }
}

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value> {
    value.get(name).ok_or_else(garbage)
}

fn text(value: &Value) -> Result<&str> {
    value.as_str().ok_or_else(garbage)
}

#[async_trait]
impl Transport for JsonRpc {
    fn endpoint(&self) -> String {
        self.base.clone()
    }

    async fn generate(&self, strength: Option<Strength>) -> Result<Kek> {
        let params = match strength {
            Some(s) => rpc_params![s.bits()],
            None => rpc_params![],
        };
        let mut value = self.call("generate", params, None).await?;
        let result = Kek::from_pem(text(&value)?).map_err(|_| garbage());
        wipe_json(&mut value);
        result
    }

    async fn get_key(&self, kek: &Kek) -> Result<Dek> {
        let pem = kek.to_pem();
        let mut value = self
            .call("get_key", rpc_params![pem.as_str()], Some(kek.id()))
            .await?;
        let bytes = Zeroizing::new(BASE64.decode(text(&value)?).map_err(|_| garbage())?);
        wipe_json(&mut value);
        Dek::from_bytes(&bytes).map_err(|_| garbage())
    }

    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let value = self
            .call(
                "get_wrapped",
                rpc_params![key_id.to_string()],
                Some(*key_id),
            )
            .await?;
        if text(field(&value, "key_id")?)? != key_id.to_string() {
            return Err(garbage());
        }
        let bytes = BASE64
            .decode(text(field(&value, "record")?)?)
            .map_err(|_| garbage())?;
        WrappedDek::decode(&bytes, key_id)
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        self.call("contains", rpc_params![key_id.to_string()], Some(*key_id))
            .await?
            .as_bool()
            .ok_or_else(garbage)
    }

    async fn status(&self) -> Result<Status> {
        serde_json::from_value(self.call("status", rpc_params![], None).await?)
            .map_err(|_| garbage())
    }
}
