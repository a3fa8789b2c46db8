//! The `XmlRpc` client.

use async_trait::async_trait;
use reqwest::{header, StatusCode};
use zeroize::{Zeroize, Zeroizing};

use super::{codec, XMLRPC_PATH};
use keyserver_core::api::{Call, Reply};
use keyserver_core::{Error, ErrorCode, Result, Transport};
use keyserver_http::ClientOptions;

/// An XML-RPC client of a keyserver (`URL/RPC2`), over HTTP or HTTPS.
///
/// # Example
///
/// ```no_run
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
    insecure: bool,
    authorization: Option<http::HeaderValue>,
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
        let base = keyserver_http::base_url(url)?;
        let tls = keyserver_http::client_config(&options.tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // A redirect would re-send the request (a KEK) wherever the
            // answer points: never followed.
            .redirect(reqwest::redirect::Policy::none())
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
            insecure: options.insecure,
            authorization: options.token.as_ref().map(|t| t.header()).transpose()?,
        })
    }
}

#[async_trait]
impl Transport for XmlRpc {
    fn endpoint(&self) -> String {
        self.base.clone()
    }

    async fn send(&self, call: Call) -> Result<Reply> {
        keyserver_http::check_clear(&self.base, &call, self.insecure)?;
        let body = codec::encode_call(call.clone())?;
        let mut request = self.http.post(&self.endpoint);
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let response = request
            .header(header::CONTENT_TYPE, "text/xml")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| {
                transport(
                    &format!(
                        "cannot reach the key server at {}",
                        keyserver_http::shown_url(&self.endpoint)
                    ),
                    e,
                )
            })?;
        drop(body);
        let status = response.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // A proxy's refusal: the body says nothing we can read.
            return Err(Error::Remote {
                code: ErrorCode::TooLarge.number(),
                message: "request too large".into(),
            });
        }
        if !status.is_success() {
            let hint = if status == StatusCode::NOT_FOUND {
                ": no key server there (check the URL's path)"
            } else {
                ""
            };
            return Err(Error::Transport {
                message: format!(
                    "the server at {} answered HTTP {status}{hint}",
                    keyserver_http::shown_url(&self.endpoint)
                ),
                source: None,
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport("cannot read the answer", e))?;
        let text = Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| codec::garbage())?);
        if let Ok(mut owned) = bytes.try_into_mut() {
            owned.as_mut().zeroize();
        }
        codec::decode_answer(&text, &call)
    }
}

fn transport(message: &str, e: reqwest::Error) -> Error {
    let message = if e.is_timeout() {
        format!("{message}: timed out")
    } else {
        message.to_string()
    };
    // A connection never made proves the request unsent: `Failover` may
    // then send even a state change to the next server.
    let source: Box<dyn std::error::Error + Send + Sync> = if e.is_connect() {
        Box::new(keyserver_core::plugin::NotSent(Box::new(e)))
    } else {
        Box::new(e)
    };
    Error::Transport {
        message,
        source: Some(source),
    }
}
