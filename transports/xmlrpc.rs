//! XML-RPC (dxr): the `/RPC2` endpoint of the server, and the `XmlRpc` client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use dxr::{Fault, FaultResponse, MethodCall, MethodResponse, Value};
use zeroize::{Zeroize, Zeroizing};

use super::http::{
    error_from_wire, log_request, parse_strength, read_body, Call, Dispatch, Reply, INVALID_PARAMS,
    METHOD_NOT_FOUND, PARSE_ERROR,
};
use super::ClientOptions;
use crate::error::codes;
use crate::{Dek, Error, Kek, KeyId, Result, Status, Strength, Transport, WrappedDek};

/// The path XML-RPC is served at.
pub const XMLRPC_PATH: &str = "/RPC2";

pub(crate) fn router(dispatch: Arc<Dispatch>, max_body: usize) -> Router {
    Router::new().route(
        XMLRPC_PATH,
        post(move |headers: HeaderMap, body: Body| {
            let dispatch = Arc::clone(&dispatch);
            async move { handle(&dispatch, max_body, &headers, body).await }
        }),
    )
}

fn xml_response(xml: String) -> Response {
    let mut response = (StatusCode::OK, xml).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// A fault. Faults travel with HTTP 200, as XML-RPC clients expect.
fn fault(code: i32, message: impl Into<String>) -> Response {
    let xml = FaultResponse {
        fault: Fault::new(code, message.into()),
    }
    .to_xml()
    .unwrap_or_default();
    xml_response(xml)
}

async fn handle(dispatch: &Dispatch, max_body: usize, headers: &HeaderMap, body: Body) -> Response {
    let start = Instant::now();
    let body = match read_body(headers, body, max_body).await {
        Ok(body) => body,
        Err(e) => {
            log_request::<()>(
                "xmlrpc",
                "-",
                None,
                &Err(Error::TooLarge {
                    size: 0,
                    limit: max_body as u64,
                }),
                start,
            );
            return fault(e.code(), e.to_string());
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return fault(PARSE_ERROR, "the request is not UTF-8");
    };
    // Never echo the parser's error: it quotes the request, which may hold a KEK.
    let Ok(mut call) = MethodCall::from_xml(text) else {
        return fault(
            PARSE_ERROR,
            "the request is not a well-formed XML-RPC methodCall",
        );
    };
    let method = call.name.to_string();
    let parsed = parse_call(&method, &mut call.params);
    for value in call.params.iter_mut() {
        wipe_value(value);
    }
    let call = match parsed {
        Ok(call) => call,
        Err((code, message)) => {
            let shown = if is_known(&method) {
                method.as_str()
            } else {
                "(unknown)"
            };
            log_request::<()>(
                "xmlrpc",
                shown,
                None,
                &Err(Error::Remote {
                    code,
                    message: message.clone(),
                }),
                start,
            );
            return fault(code, message);
        }
    };
    match dispatch.run("xmlrpc", call).await {
        Ok(reply) => {
            let value = reply_value(reply);
            match (MethodResponse { value }).to_xml() {
                Ok(xml) => xml_response(xml),
                Err(_) => fault(codes::INTERNAL, "cannot encode the response"),
            }
        }
        Err(e) => fault(e.code(), e.to_string()),
    }
}

fn wipe(bytes: Bytes) {
    if let Ok(mut owned) = bytes.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

fn wipe_value(value: &mut Value) {
    if let Value::String(s) = value {
        s.zeroize();
    }
}

fn is_known(method: &str) -> bool {
    matches!(
        method,
        "generate" | "get_key" | "get_wrapped" | "contains" | "status"
    )
}

fn bad_params(expected: &str) -> (i32, String) {
    (
        INVALID_PARAMS,
        format!("invalid parameters: expected {expected}"),
    )
}

fn parse_call(method: &str, params: &mut [Value]) -> std::result::Result<Call, (i32, String)> {
    let wire = |e: Error| (e.code(), e.to_string());
    match (method, params) {
        ("generate", []) => Ok(Call::Generate(None)),
        ("generate", [Value::Integer(bits)]) => parse_strength(i64::from(*bits))
            .map(|s| Call::Generate(Some(s)))
            .map_err(wire),
        ("generate", _) => Err(bad_params("() or (strength: int)")),
        ("get_key", [Value::String(pem)]) => {
            let pem = Zeroizing::new(std::mem::take(pem));
            Kek::from_pem(&pem).map(Call::GetKey).map_err(wire)
        }
        ("get_key", _) => Err(bad_params("(kek: string)")),
        ("get_wrapped", [Value::String(id)]) => id.parse().map(Call::GetWrapped).map_err(wire),
        ("get_wrapped", _) => Err(bad_params("(key_id: string)")),
        ("contains", [Value::String(id)]) => id.parse().map(Call::Contains).map_err(wire),
        ("contains", _) => Err(bad_params("(key_id: string)")),
        ("status", []) => Ok(Call::Status),
        ("status", _) => Err(bad_params("()")),
        _ => Err((METHOD_NOT_FOUND, "unknown method".into())),
    }
}

fn reply_value(reply: Reply) -> Value {
    match reply {
        Reply::Kek(kek) => Value::String(kek.to_pem().to_string()),
        Reply::Dek(dek) => Value::Base64(dek.as_bytes().to_vec()),
        Reply::Wrapped(record) => Value::Struct(BTreeMap::from([
            (
                "key_id".to_string(),
                Value::String(record.key_id().to_string()),
            ),
            ("record".to_string(), Value::Base64(record.encode())),
        ])),
        Reply::Bool(b) => Value::Boolean(b),
        Reply::Status(status) => Value::Struct(BTreeMap::from([
            (
                "keys".to_string(),
                Value::Integer(i32::try_from(status.keys).unwrap_or(i32::MAX)),
            ),
            ("version".to_string(), Value::String(status.version)),
            ("suite".to_string(), Value::String(status.suite)),
            ("storage".to_string(), Value::String(status.storage)),
            (
                "strength".to_string(),
                Value::Integer(i32::from(status.strength)),
            ),
        ])),
    }
}

/// An XML-RPC client of a keyserver (`URL/RPC2`), over HTTP or HTTPS.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "cipher-rustcrypto")]
/// # async fn demo() -> keyserver::Result<()> {
/// use keyserver::{Encryption, KeyClient};
/// use keyserver::backends::RustCrypto;
/// use keyserver::transports::XmlRpc;
///
/// let client = KeyClient::new(XmlRpc::new("http://127.0.0.1:8731")?, RustCrypto::new());
/// let kek = client.generate().await?;
/// let sealed = client.encrypt(&kek, b"Stephan Richter").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct XmlRpc {
    base: String,
    endpoint: String,
    http: reqwest::Client,
}

impl XmlRpc {
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
    /// As for [`XmlRpc::new`].
    pub fn with_options(url: &str, options: ClientOptions) -> Result<Self> {
        let base = super::base_url(url)?;
        let tls = super::tls::client_config(&options.tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()
            .map_err(|e| Error::Transport {
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(XmlRpc {
            endpoint: format!("{base}{XMLRPC_PATH}"),
            base,
            http,
        })
    }

    async fn call(&self, method: &str, params: Vec<Value>, key_id: Option<KeyId>) -> Result<Value> {
        let request = MethodCall {
            name: method.into(),
            params,
        };
        let body = Zeroizing::new(
            request
                .to_xml()
                .map_err(|_| Error::Internal("cannot encode an XML-RPC request"))?,
        );
        drop(request);
        let response = self
            .http
            .post(&self.endpoint)
            .header(header::CONTENT_TYPE, "text/xml")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| transport("cannot reach the key server", e))?;
        let status = response.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Err(Error::Remote {
                code: codes::TOO_LARGE,
                message: "request too large".into(),
            });
        }
        if !status.is_success() {
            return Err(Error::Transport {
                message: format!("the server answered HTTP {status}"),
                source: None,
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport("cannot read the answer", e))?;
        let text = Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| garbage())?);
        wipe(bytes);
        if let Ok(ok) = MethodResponse::from_xml(&text) {
            return Ok(ok.value);
        }
        match FaultResponse::from_xml(&text) {
            Ok(f) => Err(error_from_wire(
                f.fault.code(),
                f.fault.string().to_string(),
                key_id,
            )),
            Err(_) => Err(garbage()),
        }
    }
}

fn transport(message: &str, e: reqwest::Error) -> Error {
    let message = if e.is_timeout() {
        format!("{message}: timed out")
    } else {
        message.to_string()
    };
    Error::Transport {
        message,
        source: Some(Box::new(e)),
    }
}

fn garbage() -> Error {
    Error::Transport {
        message: "the server's answer is not a valid XML-RPC response".into(),
        source: None,
    }
}

fn member<'a>(value: &'a Value, name: &str) -> Result<&'a Value> {
    match value {
        Value::Struct(members) => members.get(name).ok_or_else(garbage),
        _ => Err(garbage()),
    }
}

fn string(value: &Value) -> Result<&str> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(garbage()),
    }
}

fn int(value: &Value) -> Result<i32> {
    match value {
        Value::Integer(i) => Ok(*i),
        _ => Err(garbage()),
    }
}

#[async_trait]
impl Transport for XmlRpc {
    fn endpoint(&self) -> String {
        self.base.clone()
    }

    async fn generate(&self, strength: Option<Strength>) -> Result<Kek> {
        let params = strength
            .map(|s| vec![Value::Integer(i32::from(s.bits()))])
            .unwrap_or_default();
        let mut value = self.call("generate", params, None).await?;
        let result = Kek::from_pem(string(&value)?).map_err(|_| garbage());
        wipe_value(&mut value);
        result
    }

    async fn get_key(&self, kek: &Kek) -> Result<Dek> {
        let params = vec![Value::String(kek.to_pem().to_string())];
        let mut value = self.call("get_key", params, Some(kek.id())).await?;
        let result = match &value {
            Value::Base64(bytes) => Dek::from_bytes(bytes).map_err(|_| garbage()),
            _ => Err(garbage()),
        };
        if let Value::Base64(bytes) = &mut value {
            bytes.zeroize();
        }
        result
    }

    async fn get_wrapped(&self, key_id: &KeyId) -> Result<WrappedDek> {
        let value = self
            .call(
                "get_wrapped",
                vec![Value::String(key_id.to_string())],
                Some(*key_id),
            )
            .await?;
        if string(member(&value, "key_id")?)? != key_id.to_string() {
            return Err(garbage());
        }
        match member(&value, "record")? {
            Value::Base64(bytes) => WrappedDek::decode(bytes, key_id),
            _ => Err(garbage()),
        }
    }

    async fn contains(&self, key_id: &KeyId) -> Result<bool> {
        match self
            .call(
                "contains",
                vec![Value::String(key_id.to_string())],
                Some(*key_id),
            )
            .await?
        {
            Value::Boolean(b) => Ok(b),
            _ => Err(garbage()),
        }
    }

    async fn status(&self) -> Result<Status> {
        let value = self.call("status", Vec::new(), None).await?;
        Ok(Status {
            keys: u64::try_from(int(member(&value, "keys")?)?).map_err(|_| garbage())?,
            version: string(member(&value, "version")?)?.to_string(),
            suite: string(member(&value, "suite")?)?.to_string(),
            storage: string(member(&value, "storage")?)?.to_string(),
            strength: u16::try_from(int(member(&value, "strength")?)?).map_err(|_| garbage())?,
        })
    }
}
