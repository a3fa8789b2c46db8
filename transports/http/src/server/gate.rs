//! What a request must show before its body is read: a `Host` that names
//! this server, and the content type of the protocol it is sent to. Together
//! they keep web pages out: a cross-origin "simple" request cannot carry
//! `text/xml` or `application/json` (a browser must ask first, with a CORS
//! preflight this server never grants), and a page reaching the server
//! through DNS rebinding sends its own host name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use keyserver_core::api::{Caller, Credentials, Identity, KeyService};

use super::Endpoint;

/// The hosts a listener answers to, and the service that authenticates
/// its callers.
pub struct Gate {
    listen: SocketAddr,
    allowed: Vec<String>,
    service: Option<Arc<dyn KeyService>>,
    endpoints: Vec<Endpoint>,
}

impl Gate {
    /// The gate of a listener on `listen` that also answers to the host
    /// names `allowed`, authenticating through `service`, in front of
    /// `endpoints`.
    pub fn new(
        listen: SocketAddr,
        allowed: &[String],
        service: Option<Arc<dyn KeyService>>,
        endpoints: &[Endpoint],
    ) -> Arc<Self> {
        Arc::new(Gate {
            listen,
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
            service,
            endpoints: endpoints.to_vec(),
        })
    }

    /// The endpoint serving `path`, if any.
    fn endpoint(&self, path: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.path == path)
    }

    /// Whether `host` (a `Host` header or an HTTP/2 authority, port
    /// included or not) names this listener.
    pub fn host_allowed(&self, host: &str) -> bool {
        // Compared without case, and without copying the header.
        let name = strip_port(host.trim());
        if self.allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            return true;
        }
        let ip = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name)
            .parse::<IpAddr>();
        let listen = self.listen.ip();
        match ip {
            // An address literal cannot be rebound: accept the listener's
            // own, or any local one when listening on all addresses.
            Ok(ip) => {
                ip == listen
                    || listen.is_unspecified()
                    || (ip.is_loopback() && listen.is_loopback())
            }
            Err(_) => {
                const SUFFIX: &str = ".localhost";
                let subdomain = name.len() >= SUFFIX.len()
                    && name.is_char_boundary(name.len() - SUFFIX.len())
                    && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX);
                listen.is_loopback() && (name.eq_ignore_ascii_case("localhost") || subdomain)
            }
        }
    }
}

/// `name:port` -> `name`; `[v6]:port` -> `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Whether a body of `content_type` may go to `endpoint` (`/RPC2`: XML;
/// `/jsonrpc`: JSON). Other paths are the router's to refuse (404, 405).
fn content_type_ok(endpoint: Option<&Endpoint>, content_type: Option<&str>) -> bool {
    let Some(endpoint) = endpoint else {
        return true;
    };
    let Some(mime) = content_type
        .and_then(|v| v.split(';').next())
        .map(str::trim)
    else {
        return false;
    };
    endpoint
        .media_types
        .iter()
        .any(|m| mime.eq_ignore_ascii_case(m))
}

/// The middleware: 400 for a request that names no host, 421 for one that
/// names a foreign host (in its `Host` header or in an absolute-form
/// target, HTTP/2's `:authority`), 415 for a wrong content type on a POST,
/// before anything else happens. No CORS header is ever added.
pub async fn check(gate: Arc<Gate>, request: Request, next: Next) -> Response {
    // A Host that is not text names nothing here.
    let header_host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or_default());
    let target_host = request.uri().authority().map(|a| a.host());
    if header_host.is_none() && target_host.is_none() {
        // HTTP/1.1 requires a Host (RFC 9112, 3.2); HTTP/2 carries its
        // `:authority` in the target. A request without either could be
        // meant for any server.
        return refuse(
            StatusCode::BAD_REQUEST,
            "a request names the host it is for (a Host header)",
        );
    }
    // Both are checked when both are there: whichever a proxy on the way
    // would follow names this server.
    if [header_host, target_host]
        .into_iter()
        .flatten()
        .any(|host| !gate.host_allowed(host))
    {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this server does not answer to that host name (see --allowed-hosts)",
        );
    }
    if request.method() == axum::http::Method::POST {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type_ok(gate.endpoint(request.uri().path()), content_type) {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "XML-RPC takes Content-Type: text/xml, JSON-RPC application/json",
            );
        }
    }
    // Who is calling, from the headers and the TLS handshake alone: the
    // caller is known before a byte of the body is read, and travels with
    // the request to each of its calls.
    let cert = request
        .extensions()
        .get::<super::peer::PeerCert>()
        .cloned()
        .unwrap_or_default();
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    let identities = cert.0.as_ref().map_or(&[][..], |c| &c.identities[..]);
    let token = bearer_or_basic(request.headers());
    let credentials = Credentials::new(token.as_deref().map(String::as_str), identities);
    let identity = gate
        .service
        .as_ref()
        .and_then(|s| s.authenticate(&credentials))
        .unwrap_or(Identity::Anonymous {
            remote: !gate.listen.ip().is_loopback(),
        });
    drop(token);
    let mut caller = Caller::with_identity(identity).from_peer(
        peer,
        gate.endpoint(request.uri().path())
            .map_or("http", |e| e.protocol),
    );
    caller.tls_subject = cert.0.as_ref().map(|c| c.subject.clone());
    // A client certificate the TLS layer verified authenticates too (with
    // client certificates and no auth file, every caller is anonymous to
    // the policy, yet proved who it is).
    let authenticated = caller.identity.is_authenticated() || cert.0.is_some();
    let mut request = request;
    request.extensions_mut().insert(caller);
    let conn = request
        .extensions()
        .get::<Arc<super::conn::ConnState>>()
        .cloned();
    // Counted as in flight on its connection until answered, so that the
    // connection limit never evicts a connection with a request running;
    // and as receiving its body while the body lives (the endpoint drops
    // it once read), so that a slow sender can be told from a request
    // being answered.
    let _in_flight = conn.as_ref().map(super::conn::ConnState::request);
    if let Some(conn) = conn.filter(|_| !authenticated) {
        if !axum::body::HttpBody::is_end_stream(request.body()) {
            let receiving = conn.receiving_unauthenticated();
            request = request.map(|body| {
                axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                    let _ = &receiving;
                    frame
                }))
            });
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer TOKEN` header, or the password of
/// `Basic` (the user name is ignored). A header of another scheme, or one
/// that does not decode, is a token that matches nobody: credentials were
/// presented, and they are wrong.
fn bearer_or_basic(headers: &axum::http::HeaderMap) -> Option<zeroize::Zeroizing<String>> {
    use base64::Engine;
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().unwrap_or("");
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .unwrap_or_default(),
        );
        std::str::from_utf8(&decoded)
            .ok()
            .and_then(|s| s.split_once(':'))
            .map(|(_, password)| password.to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Some(zeroize::Zeroizing::new(token))
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_name_the_listener() {
        let loopback = Gate::new(
            "127.0.0.1:8731".parse().unwrap(),
            &["keys.example".into()],
            None,
            &[],
        );
        for ok in [
            "127.0.0.1:8731",
            "127.0.0.1",
            "localhost:8731",
            "LOCALHOST",
            "app.localhost:1",
            "App.LocalHost",
            " localhost ",
            "[::1]:8731",
            "keys.example",
            "Keys.Example:443",
        ] {
            assert!(loopback.host_allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8731",
            "10.0.0.1",
            "localhost.evil.example",
            "localhost.",
            "",
        ] {
            assert!(!loopback.host_allowed(refused), "{refused}");
        }
        let public = Gate::new("10.1.2.3:8731".parse().unwrap(), &[], None, &[]);
        assert!(public.host_allowed("10.1.2.3:8731"));
        assert!(!public.host_allowed("localhost"));
        assert!(!public.host_allowed("10.1.2.4"));
        let any = Gate::new("0.0.0.0:8731".parse().unwrap(), &[], None, &[]);
        assert!(any.host_allowed("192.168.1.9:8731"));
        assert!(!any.host_allowed("keys.example"));
    }

    #[test]
    fn bearer_tokens_and_basic_passwords() {
        use base64::Engine;
        let token = |value: Option<&str>| {
            let mut headers = axum::http::HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::AUTHORIZATION, v.parse().unwrap());
            }
            bearer_or_basic(&headers).map(|t| t.to_string())
        };
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("app:app-token")
        );
        assert_eq!(
            token(Some("Bearer app-token")).as_deref(),
            Some("app-token")
        );
        assert_eq!(
            token(Some("bearer  app-token ")).as_deref(),
            Some("app-token")
        );
        assert_eq!(token(Some(&basic)).as_deref(), Some("app-token"));
        assert_eq!(token(None), None);
        // Presented but unusable: a token that matches nobody.
        for bad in ["Basic !!", "Token app-token", "Bearer"] {
            assert_eq!(token(Some(bad)).as_deref(), Some(""), "{bad}");
        }
    }

    #[test]
    fn content_types_per_protocol() {
        fn no_routes(_: Arc<crate::server::dispatch::Dispatch>) -> axum::Router {
            axum::Router::new()
        }
        let xml = Endpoint {
            path: "/RPC2",
            protocol: "xmlrpc",
            media_types: &["text/xml", "application/xml"],
            router: no_routes,
        };
        let json = Endpoint {
            path: "/jsonrpc",
            protocol: "jsonrpc",
            media_types: &["application/json"],
            router: no_routes,
        };
        assert!(content_type_ok(Some(&xml), Some("text/xml")));
        assert!(content_type_ok(Some(&xml), Some("Text/XML; charset=utf-8")));
        assert!(content_type_ok(Some(&xml), Some("application/xml")));
        assert!(!content_type_ok(Some(&xml), Some("text/plain")));
        assert!(!content_type_ok(Some(&xml), None));
        assert!(content_type_ok(Some(&json), Some("application/json")));
        assert!(content_type_ok(
            Some(&json),
            Some(" Application/JSON ; charset=utf-8")
        ));
        assert!(!content_type_ok(
            Some(&json),
            Some("text/plain;charset=UTF-8")
        ));
        assert!(!content_type_ok(
            Some(&json),
            Some("application/x-www-form-urlencoded")
        ));
        // A path no endpoint serves is the router's to refuse.
        assert!(content_type_ok(None, None));
    }
}
