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

/// The hosts a listener answers to, and the policy it enforces.
pub(crate) struct Gate {
    listen: SocketAddr,
    allowed: Vec<String>,
    auth: Option<Arc<super::auth::Auth>>,
    audit: Option<Arc<super::audit::AuditLog>>,
    metrics: Option<Arc<super::metrics::Metrics>>,
}

impl Gate {
    pub(crate) fn new(
        listen: SocketAddr,
        allowed: &[String],
        auth: Option<Arc<super::auth::Auth>>,
        audit: Option<Arc<super::audit::AuditLog>>,
        metrics: Option<Arc<super::metrics::Metrics>>,
    ) -> Arc<Self> {
        Arc::new(Gate {
            listen,
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
            auth,
            audit,
            metrics,
        })
    }

    /// Whether `host` (a `Host` header or an HTTP/2 authority, port
    /// included or not) names this listener.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
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

/// The content types a path accepts (`/RPC2`: XML; `/jsonrpc`: JSON).
fn content_type_ok(path: &str, content_type: Option<&str>) -> bool {
    let Some(mime) = content_type
        .and_then(|v| v.split(';').next())
        .map(str::trim)
    else {
        return false;
    };
    match path {
        #[cfg(feature = "transport-xmlrpc-server")]
        crate::transports::xmlrpc::XMLRPC_PATH => {
            mime.eq_ignore_ascii_case("text/xml") || mime.eq_ignore_ascii_case("application/xml")
        }
        #[cfg(feature = "transport-jsonrpc-server")]
        crate::transports::jsonrpc::JSONRPC_PATH => mime.eq_ignore_ascii_case("application/json"),
        // Other paths are the router's to refuse (404, 405).
        _ => true,
    }
}

/// The middleware: 421 for a foreign host, 415 for a wrong content type on
/// a POST, before anything else happens. No CORS header is ever added.
pub(crate) async fn check(gate: Arc<Gate>, request: Request, next: Next) -> Response {
    let host = match request.headers().get(header::HOST) {
        // A Host that is not text names nothing here.
        Some(h) => Some(h.to_str().unwrap_or_default()),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    // A client without a Host (HTTP/1.0) is not a browser: let it through.
    if let Some(host) = host {
        if !gate.host_allowed(host) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer to that host name (see --allowed-hosts)",
            );
        }
    }
    if request.method() == axum::http::Method::POST {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type_ok(request.uri().path(), content_type) {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "XML-RPC takes Content-Type: text/xml, JSON-RPC application/json",
            );
        }
    }
    // Who is calling: each call of the request is checked against it.
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
    let mut caller = super::auth::Caller::of(gate.auth.as_deref(), request.headers(), identities);
    if matches!(caller, super::auth::Caller::Anyone) && !gate.listen.ip().is_loopback() {
        caller = super::auth::Caller::AnyoneRemote;
    }
    let context = super::auth::RequestContext {
        caller,
        peer,
        cert,
        audit: gate.audit.clone(),
        metrics: gate.metrics.clone(),
    };
    // Counted as in flight on its connection until answered, so that the
    // connection limit never evicts a connection with a request running.
    let _in_flight = request
        .extensions()
        .get::<Arc<super::conn::ConnState>>()
        .map(super::conn::ConnState::request);
    super::auth::REQUEST.scope(context, next.run(request)).await
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
            None,
            None,
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
        let public = Gate::new("10.1.2.3:8731".parse().unwrap(), &[], None, None, None);
        assert!(public.host_allowed("10.1.2.3:8731"));
        assert!(!public.host_allowed("localhost"));
        assert!(!public.host_allowed("10.1.2.4"));
        let any = Gate::new("0.0.0.0:8731".parse().unwrap(), &[], None, None, None);
        assert!(any.host_allowed("192.168.1.9:8731"));
        assert!(!any.host_allowed("keys.example"));
    }

    #[test]
    fn content_types_per_protocol() {
        #[cfg(feature = "transport-xmlrpc-server")]
        {
            assert!(content_type_ok("/RPC2", Some("text/xml")));
            assert!(content_type_ok("/RPC2", Some("Text/XML; charset=utf-8")));
            assert!(content_type_ok("/RPC2", Some("application/xml")));
            assert!(!content_type_ok("/RPC2", Some("text/plain")));
            assert!(!content_type_ok("/RPC2", None));
        }
        #[cfg(feature = "transport-jsonrpc-server")]
        {
            assert!(content_type_ok("/jsonrpc", Some("application/json")));
            assert!(content_type_ok(
                "/jsonrpc",
                Some(" Application/JSON ; charset=utf-8")
            ));
            assert!(!content_type_ok(
                "/jsonrpc",
                Some("text/plain;charset=UTF-8")
            ));
            assert!(!content_type_ok(
                "/jsonrpc",
                Some("application/x-www-form-urlencoded")
            ));
        }
    }
}
