//! The AWS-LC suite beyond the kit: hybrid post-quantum keys shared with
//! the RustCrypto suite (the two suites that offer ML-KEM), and the FIPS
//! status a server reports over both protocols.

use std::sync::Arc;

use keyserver::backends::{AwsLc, MemoryStorage, RustCrypto};
use keyserver::crypto::RsaKek;
use keyserver::transports::{HttpServer, ServerConfig};
use keyserver::{CipherSuite, KekAlg, KeyClient, KeyServer, KeyService, Strength};

/// Hybrid KEKs made by either suite unwrap through the other, at every
/// strength, and data crosses both ways.
#[tokio::test]
async fn hybrid_keys_cross_between_awslc_and_rustcrypto() {
    let storage = Arc::new(MemoryStorage::new());
    let server = |suite: Box<dyn CipherSuite>| {
        KeyServer::new(suite, Arc::clone(&storage)).with_kek_alg(KekAlg::HybridPq)
    };
    let aws = server(Box::new(AwsLc::new()));
    let rc = server(Box::new(RustCrypto::new()));
    for strength in Strength::ALL {
        for (maker, user) in [(&aws, &rc), (&rc, &aws)] {
            let kek = maker
                .generate_with(strength, KekAlg::HybridPq)
                .await
                .unwrap();
            assert_eq!(
                maker.get(&kek).await.unwrap(),
                user.get(&kek).await.unwrap(),
                "{strength}"
            );
            let sealed = maker.encrypt(&kek, b"post-quantum").await.unwrap();
            assert_eq!(
                &user.decrypt(&kek, &sealed).await.unwrap()[..],
                b"post-quantum"
            );
        }
    }
}

/// `status.fips` is what AWS-LC says of itself (true only in a build with
/// `cipher-awslc-fips`), and false for the other suites; it and `kek_alg`
/// cross both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_whether_the_suite_is_a_fips_module() {
    let fips = cfg!(feature = "cipher-awslc-fips");
    assert_eq!(AwsLc::new().fips_validated(), fips);
    assert!(!RustCrypto::new().fips_validated());
    let boxed: Box<dyn CipherSuite> = Box::new(AwsLc::new());
    assert_eq!(boxed.fips_validated(), fips);
    for (suite, expected) in [
        (Box::new(AwsLc::new()) as Box<dyn CipherSuite>, fips),
        (Box::new(RustCrypto::new()), false),
    ] {
        let keys = Arc::new(KeyServer::new(suite, MemoryStorage::new()).with_kek_alg(KekAlg::Ec));
        assert_eq!(keys.status().fips, expected);
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        let server = HttpServer::start(Arc::clone(&keys) as Arc<dyn KeyService>, config)
            .await
            .unwrap();
        for transport in crate::common::clients(&server.url(), None) {
            let client = KeyClient::new(transport, AwsLc::new());
            let status = client.status().await.unwrap();
            // Every member crosses both protocols (kek_alg and fips are
            // the ones an older reader did not know).
            assert_eq!(status, keys.status());
            assert_eq!((status.fips, &status.kek_alg[..]), (expected, "ec"));
        }
        server.shutdown().await;
    }
}

/// AWS-LC makes RSA keys in multiples of 128 bits: another size is refused
/// with a policy error (code 4), never rounded down to a smaller key.
#[test]
fn an_rsa_size_awslc_cannot_make_exactly_is_refused() {
    for bits in [3000, 3071, 4100] {
        let err = AwsLc::new().generate_rsa(bits).unwrap_err();
        assert_eq!(err.code(), 4, "{bits}: {err}");
    }
    let kek = keyserver::Kek::from_pkcs8_der(&AwsLc::new().generate_rsa(3072).unwrap()).unwrap();
    assert_eq!(kek.bits(), 3072);
}
