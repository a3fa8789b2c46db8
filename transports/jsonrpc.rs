//! JSON-RPC 2.0 (jsonrpsee): the `/jsonrpc` endpoint of the server, and the
//! `JsonRpc` client.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use jsonrpsee::server::{RpcModule, Server, ServerConfig as RpcServerConfig};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::{json, Value};
use tower::Service;
use zeroize::{Zeroize, Zeroizing};

use super::http::{
    error_from_wire, log_request, parse_strength, Call, Dispatch, Reply, INVALID_PARAMS,
};
use super::ClientOptions;
use crate::error::codes;
use crate::{Dek, Error, Kek, KeyId, Result, Status, Strength, Transport, WrappedDek};

/// The path JSON-RPC is served at.
pub const JSONRPC_PATH: &str = "/jsonrpc";

pub(crate) fn router(dispatch: Arc<Dispatch>, max_body: usize) -> Result<Router> {
    let mut module = RpcModule::new(dispatch);
    for method in ["generate", "get_key", "get_wrapped", "contains", "status"] {
        module
            .register_async_method(method, move |params, dispatch, _| async move {
                handle(method, params, &dispatch).await
            })
            .map_err(|_| Error::Internal("cannot register a JSON-RPC method"))?;
    }
    let limit = u32::try_from(max_body).unwrap_or(u32::MAX);
    let config = RpcServerConfig::builder()
        .max_request_body_size(limit)
        .max_response_body_size(u32::MAX / 2)
        .http_only()
        .build();
    let (stop, server_handle) = jsonrpsee::server::stop_channel();
    let service = Server::builder()
        .set_config(config)
        .to_service_builder()
        .build(module, stop);
    let keep = Arc::new(server_handle);
    Ok(Router::new().route(
        JSONRPC_PATH,
        post(move |request: Request| {
            let mut service = service.clone();
            let _keep = Arc::clone(&keep);
            async move {
                match service.call(request).await {
                    Ok(response) => response.map(axum::body::Body::new).into_response(),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
                }
            }
        }),
    ))
}

fn rpc_error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.into(), None::<()>)
}

async fn handle(
    method: &'static str,
    params: Params<'static>,
    dispatch: &Dispatch,
) -> std::result::Result<Value, ErrorObjectOwned> {
    let start = Instant::now();
    let call = match parse_call(method, &params) {
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
fn parse_call(method: &str, params: &Params<'_>) -> std::result::Result<Call, ErrorObjectOwned> {
    let bad = |expected: &str| {
        rpc_error(
            INVALID_PARAMS,
            format!("invalid parameters: expected {expected}"),
        )
    };
    let wire = |e: Error| rpc_error(e.code(), e.to_string());
    let mut value: Value = match params.as_str() {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|_| bad("a JSON array or object"))?,
    };
    let result = (|| {
        let (name, expected) = match method {
            "generate" => ("strength", "[] or [strength: int]"),
            "get_key" => ("kek", "[kek: string]"),
            "get_wrapped" | "contains" => ("key_id", "[key_id: string]"),
            _ => ("", "[]"),
        };
        let arg: Option<&mut Value> = match &mut value {
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
    })();
    wipe_json(&mut value);
    result
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
    client: HttpClient,
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
        let mut builder = HttpClientBuilder::default().request_timeout(options.timeout);
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
