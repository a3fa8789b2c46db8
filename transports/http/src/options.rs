//! What the network clients share: their options and URL handling.

use crate::ClientTls;

/// Options of the network clients (`XmlRpc`, `JsonRpc`).
///
/// ```
/// let options = keyserver::transports::ClientOptions::default();
/// assert_eq!(options.timeout.as_secs(), 30);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Network time limit for connecting and for each request (not the DEK
    /// cache's time to live, which is `KeyClient::with_cache_ttl`).
    pub timeout: std::time::Duration,
    /// TLS settings for `https://` URLs.
    pub tls: ClientTls,
    /// Allow calls that carry key material (`generate`, which answers with a
    /// KEK; `get_key`, which sends one and answers with a DEK) over plain
    /// `http://` to a host that is not loopback. Off by default: they are
    /// refused with [`Error::Policy`](keyserver_core::Error::Policy) before anything
    /// is sent. Only behind a TLS-terminating proxy on the same host.
    pub insecure: bool,
    /// A bearer token for a server with access control (sent as
    /// `Authorization: Bearer`, marked sensitive; `Debug` redacts it).
    pub token: Option<Token>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: std::time::Duration::from_secs(30),
            tls: ClientTls::default(),
            insecure: false,
            token: None,
        }
    }
}

/// A bearer token: wiped on drop, redacted in `Debug`.
///
/// ```
/// let token = keyserver::transports::Token::new("s3cret");
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Token(zeroize::Zeroizing<String>);

impl Token {
    /// A token (surrounding white space, such as a file's final newline, is
    /// dropped).
    pub fn new(token: impl Into<String>) -> Self {
        let token = zeroize::Zeroizing::new(token.into());
        Token(zeroize::Zeroizing::new(token.trim().to_owned()))
    }

    /// The `Authorization` header value that carries it.
    pub fn header(&self) -> keyserver_core::Result<http::HeaderValue> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", self.0.as_str()))
            .map_err(|_| keyserver_core::Error::InvalidKey {
                reason: "a token is printable ASCII".into(),
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Refuses `call` if it carries key material and `base` is plain HTTP to a
/// host that is not loopback, unless `insecure`.
pub fn check_clear(
    base: &str,
    call: &keyserver_core::api::Call,
    insecure: bool,
) -> keyserver_core::Result<()> {
    use keyserver_core::api::Call;
    let carries_keys = matches!(
        call,
        Call::Generate(..)
            | Call::GetKey(_)
            | Call::Rotate(..)
            | Call::Change(_, keyserver_core::Target::Kek(_))
    );
    let Some(rest) = base.strip_prefix("http://") else {
        return Ok(());
    };
    if !carries_keys || insecure || is_loopback_host(rest) {
        return Ok(());
    }
    Err(keyserver_core::Error::Policy {
        reason: format!(
            "refusing to send {} over plain HTTP to {rest}: key material would cross the network \
             in clear. Use https://, or say insecure explicitly",
            call.method().name
        ),
    })
}

/// Whether `host[:port][/...]` names this machine: `localhost`,
/// `*.localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback_host(authority: &str) -> bool {
    let authority = authority.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `http(s)://host[:port]` without a trailing slash or the protocol path.
pub fn base_url(url: &str) -> keyserver_core::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed
        .strip_suffix("/RPC2")
        .or_else(|| trimmed.strip_suffix("/jsonrpc"))
        .unwrap_or(trimmed);
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(keyserver_core::Error::Transport {
            message: format!("not an http:// or https:// URL: {trimmed}"),
            source: None,
        });
    }
    Ok(trimmed.to_string())
}

/// `url` as an error message may show it: without credentials in its
/// authority (`user:password@`).
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_has_no_credentials() {
        assert_eq!(
            shown_url("http://127.0.0.1:1/RPC2"),
            "http://127.0.0.1:1/RPC2"
        );
        assert_eq!(
            shown_url("https://app:secret@keys.example:8731/jsonrpc"),
            "https://…@keys.example:8731/jsonrpc"
        );
        assert_eq!(
            shown_url("https://keys.example/a@b"),
            "https://keys.example/a@b"
        );
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:8731",
            "127.1.2.3",
            "localhost:1",
            "LOCALHOST",
            "a.localhost",
            "[::1]:8731",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for no in [
            "10.0.0.1:8731",
            "keys.example",
            "localhost.example",
            "[::2]:1",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }
}
