//! What the network clients share: their options and URL handling.

use crate::transports::ClientTls;

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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: std::time::Duration::from_secs(30),
            tls: ClientTls::default(),
        }
    }
}

/// `http(s)://host[:port]` without a trailing slash or the protocol path.
pub(crate) fn base_url(url: &str) -> crate::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed
        .strip_suffix("/RPC2")
        .or_else(|| trimmed.strip_suffix("/jsonrpc"))
        .unwrap_or(trimmed);
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(crate::Error::Transport {
            message: format!("not an http:// or https:// URL: {trimmed}"),
            source: None,
        });
    }
    Ok(trimmed.to_string())
}
