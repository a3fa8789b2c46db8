//! rustls configurations from PEM files, always with the `ring` provider
//! passed explicitly (never a process-wide default provider).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use keyserver_core::{Error, Result};

/// Certificate and key files (PEM) for TLS, and optionally the CA that client
/// certificates must chain to (mutual TLS).
#[cfg(feature = "server")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// If set, clients must present a certificate issued by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

/// TLS settings of a client.
///
/// ```
/// let tls = keyserver::transports::ClientTls::default();
/// assert!(tls.ca_cert.is_none()); // the system's trusted roots
/// ```
#[cfg(feature = "client")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificate(s) (PEM) the server's certificate must chain to; `None`
    /// uses the operating system's trusted roots.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    pub client_key: Option<PathBuf>,
}

fn tls_error(message: String) -> Error {
    Error::Transport {
        message,
        source: None,
    }
}

/// The TLS crypto provider, handed to every configuration explicitly (never
/// a process-wide default). With AWS-LC linked (feature `cipher-awslc`, as
/// in the `keyserver` command) it is rustls's AWS-LC provider, whose key
/// exchange leads with the post-quantum hybrid X25519MLKEM768: a recorded
/// session stays secret against a future quantum computer, like a
/// `hybrid-pq` KEK. Without, it is *ring*'s, classical ECDHE only (rustls
/// deprecates it for that reason since 0.23.48; it keeps a client build free
/// of any C library).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc"))]
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(format!("cannot read certificates from {shown}: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("bad certificate in {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(format!("no certificate in {shown}")));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    // The error names the file, never its contents.
    PrivateKeyDer::from_pem_file(path)
        .map_err(|_| tls_error(format!("cannot read a private key from {}", path.display())))
}

fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("bad CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The server's TLS configuration (HTTP/1.1 and HTTP/2 by ALPN).
#[cfg(feature = "server")]
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS set-up: {e}")))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider,
            )
            .build()
            .map_err(|e| tls_error(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| tls_error(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's TLS configuration.
#[cfg(feature = "client")]
pub fn client_config(tls: &ClientTls) -> Result<rustls::ClientConfig> {
    let roots = match &tls.ca_cert {
        Some(ca) => roots(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Skip the odd certificate the system store holds that webpki rejects.
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key_path)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_path)?)
            .map_err(|e| tls_error(format!("client certificate and key: {e}"))),
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(tls_error(
            "a client certificate needs both a certificate and a key file".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    /// With AWS-LC linked, TLS offers the post-quantum hybrid first.
    #[cfg(feature = "aws-lc")]
    #[test]
    fn with_aws_lc_the_first_key_exchange_is_post_quantum() {
        let groups: Vec<_> = super::provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(groups.first(), Some(&rustls::NamedGroup::X25519MLKEM768));
    }

    /// Without, the classical groups of *ring*.
    #[cfg(not(feature = "aws-lc"))]
    #[test]
    fn without_aws_lc_the_key_exchange_is_classical() {
        let provider = super::provider();
        assert!(provider
            .kx_groups
            .iter()
            .any(|g| g.name() == rustls::NamedGroup::X25519));
    }
}
