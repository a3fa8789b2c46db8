//! Who is at the other end of a connection over mutual TLS: the subject and
//! the identities (common name and subject alternative names) of the client
//! certificate the TLS layer verified, handed to each request of the
//! connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use x509_cert::der::Decode;

/// What a verified client certificate says of its holder.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject distinguished name, as RFC 4514 writes it (for the audit
    /// log).
    pub subject: String,
    /// `CN=..` for each common name, `DNS:..`, `EMAIL:..`, `URI:..` for each
    /// subject alternative name of those kinds.
    pub identities: Vec<String>,
}

impl ClientCert {
    /// The identities of the DER certificate `der` (already verified by
    /// the TLS layer); an unreadable part adds nothing.
    pub fn from_der(der: &[u8]) -> Self {
        let Ok(cert) = x509_cert::Certificate::from_der(der) else {
            return ClientCert::default();
        };
        let tbs = cert.tbs_certificate();
        let mut identities = Vec::new();
        for atv in tbs.subject().iter() {
            if atv.oid == x509_cert::der::oid::db::rfc4519::COMMON_NAME {
                if let Ok(cn) = x509_cert::ext::pkix::name::DirectoryString::try_from(&atv.value) {
                    identities.push(format!("CN={}", cn.value()));
                }
            }
        }
        if let Ok(Some((_, san))) = tbs.get_extension::<x509_cert::ext::pkix::SubjectAltName>() {
            use x509_cert::ext::pkix::name::GeneralName;
            for name in san.0 {
                match name {
                    GeneralName::DnsName(n) => identities.push(format!("DNS:{}", n.as_str())),
                    GeneralName::Rfc822Name(n) => identities.push(format!("EMAIL:{}", n.as_str())),
                    GeneralName::UniformResourceIdentifier(n) => {
                        identities.push(format!("URI:{}", n.as_str()));
                    }
                    _ => {}
                }
            }
        }
        ClientCert {
            subject: tbs.subject().to_string(),
            identities,
        }
    }
}

/// The client certificate of a connection, as an extension on each of its
/// requests (`None`: plain HTTP, or TLS without a client certificate).
#[derive(Clone, Debug, Default)]
pub struct PeerCert(pub Option<Arc<ClientCert>>);

/// Wraps the TLS acceptor: after the handshake, reads the client
/// certificate it verified and hands it to the connection's requests.
#[derive(Clone)]
pub struct PeerCerts<A>(pub A);

impl<A, I, S, T> axum_server::accept::Accept<I, S> for PeerCerts<A>
where
    A: axum_server::accept::Accept<I, S, Stream = tokio_rustls::server::TlsStream<T>>
        + Clone
        + Send
        + 'static,
    A::Future: Send,
    A::Service: Send,
    I: Send + 'static,
    S: Send + 'static,
    T: Send + 'static,
{
    type Stream = A::Stream;
    type Service = axum::middleware::AddExtension<A::Service, PeerCert>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let inner = self.0.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = inner.await?;
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| Arc::new(ClientCert::from_der(der)));
            let service = tower_layer::Layer::layer(&axum::Extension(PeerCert(cert)), service);
            Ok((stream, service))
        })
    }
}

/// The address a peer's limits are counted under: an IPv4 address (also
/// when written as IPv4-mapped IPv6), or an IPv6 address's /64 (one host's
/// usual allocation: otherwise a single host could be any number of
/// peers).
///
/// ```text
/// address_group("2001:db8::1".parse()?) == address_group("2001:db8::ffff".parse()?)
/// ```
pub fn address_group(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::address_group;

    #[test]
    fn a_v6_host_is_one_peer_and_mapped_v4_is_v4() {
        let group = |s: &str| address_group(s.parse().unwrap());
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("::ffff:10.0.0.7"), group("10.0.0.7"));
        assert_ne!(group("10.0.0.7"), group("10.0.0.8"));
    }
}
