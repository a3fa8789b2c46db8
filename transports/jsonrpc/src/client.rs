//! The `JsonRpc` client.

use async_trait::async_trait;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::middleware::RpcServiceBuilder;
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde_json::Value;

use super::{codec, JSONRPC_PATH};
use keyserver_core::api::{Call, Reply};
use keyserver_core::{Error, ErrorCode, Result, Transport};
use keyserver_http::ClientOptions;

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
    insecure: bool,
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
        let base = keyserver_http::base_url(url)?;
        // No RPC logger: jsonrpsee's logs the whole request (the KEK) at TRACE.
        let mut builder = HttpClientBuilder::default()
            .request_timeout(options.timeout)
            .set_rpc_middleware(RpcServiceBuilder::new());
        if let Some(token) = &options.token {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, token.header()?);
            builder = builder.set_headers(headers);
        }
        if base.starts_with("https://") {
            builder = builder.with_custom_cert_store(keyserver_http::client_config(&options.tls)?);
        }
        let client = builder
            .build(format!("{base}{JSONRPC_PATH}"))
            .map_err(|e| Error::Transport {
                message: "cannot build the JSON-RPC client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(JsonRpc {
            base,
            insecure: options.insecure,
            client,
        })
    }
}

#[async_trait]
impl Transport for JsonRpc {
    fn endpoint(&self) -> String {
        self.base.clone()
    }

    async fn send(&self, call: Call) -> Result<Reply> {
        keyserver_http::check_clear(&self.base, &call, self.insecure)?;
        let method = call.method().name;
        let mut params = ArrayParams::new();
        for value in call.clone().into_params() {
            let mut json = codec::to_json(value);
            let inserted = params.insert(&json);
            codec::wipe(&mut json);
            inserted.map_err(|_| Error::Internal("cannot encode a JSON-RPC request".into()))?;
        }
        let result = self
            .client
            .request::<Value, _>(method, params)
            .await
            .map_err(|e| match e {
                ClientError::Call(obj) => {
                    Error::from_wire(obj.code(), obj.message().to_string(), call.key_id())
                }
                ClientError::RequestTimeout => Error::Transport {
                    message: "the key server did not answer in time".into(),
                    source: None,
                },
                ClientError::ParseError(_) => codec::garbage(),
                ClientError::Transport(e) => {
                    let text = e.to_string();
                    if text.contains("404") {
                        // Reached, but nothing serves JSON-RPC there.
                        Error::Transport {
                            message: format!(
                                "the server at {}{JSONRPC_PATH} answered HTTP 404: no key \
                                 server there (check the URL's path)",
                                keyserver_http::shown_url(&self.base)
                            ),
                            source: None,
                        }
                    } else if text.contains("413") {
                        // The listener's answer to an oversized body: HTTP
                        // 413, whose JSON body the client library does not
                        // read.
                        Error::Remote {
                            code: ErrorCode::TooLarge.number(),
                            message: "request too large".into(),
                        }
                    } else {
                        Error::Transport {
                            message: format!(
                                "cannot reach the key server at {}{JSONRPC_PATH}",
                                keyserver_http::shown_url(&self.base)
                            ),
                            source: Some(e),
                        }
                    }
                }
                other => Error::Transport {
                    message: other.to_string(),
                    source: None,
                },
            })?;
        codec::reply(&call, result)
    }
}
