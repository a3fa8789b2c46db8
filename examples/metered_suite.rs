//! A cipher suite written outside keyserver's crates, proving itself with
//! the public conformance kit (feature `testing`), then serving a key
//! server.
//!
//! `Metered<C>` is what an operator might write: a suite that counts the
//! primitives another suite runs (for a dashboard, or to see what a
//! workload costs), forwarding each call. It implements the four required
//! capabilities of `keyserver::crypto::CipherSuite` (AES-GCM, HKDF, random,
//! RSA KEKs) and not the optional EC and hybrid ones, so its KEKs are RSA:
//! a server asked for an EC key answers with a policy error naming this
//! suite, and the kit checks exactly what it offers (it skips the EC and
//! hybrid checks for a suite without them). Everything here uses only
//! keyserver's public API.
//!
//! ```sh
//! cargo run --example metered_suite --features "testing cipher-rustcrypto"
//! ```
//!
//! In the suite's own crate, the kit is one line in a test file:
//!
//! ```ignore
//! keyserver::cipher_conformance!(metered, my_crate::Metered::new(RustCrypto::new()));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::crypto::{
    Aead, CipherSuite, HkdfHash, Kdf, RsaKek, SecureRandom, GCM_NONCE_LEN, GCM_TAG_LEN,
};
use keyserver::{KeyServer, Result};
use zeroize::Zeroizing;

/// Counts of the primitives a suite ran.
#[derive(Debug, Default)]
struct Meter {
    rsa_keys: AtomicU64,
    rsa_wraps: AtomicU64,
    rsa_unwraps: AtomicU64,
    hkdf: AtomicU64,
    gcm_seals: AtomicU64,
    gcm_opens: AtomicU64,
    random_bytes: AtomicU64,
}

/// `C`, with every primitive counted.
struct Metered<C> {
    inner: C,
    meter: Meter,
}

impl<C: CipherSuite> Metered<C> {
    fn new(inner: C) -> Self {
        Metered {
            inner,
            meter: Meter::default(),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl<C: CipherSuite> Aead for Metered<C> {
    fn aes_gcm_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN]> {
        count(&self.meter.gcm_seals);
        self.inner.aes_gcm_seal_in_place(key, nonce, aad, buf)
    }

    fn aes_gcm_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()> {
        count(&self.meter.gcm_opens);
        self.inner.aes_gcm_open_in_place(key, nonce, aad, buf, tag)
    }
}

impl<C: CipherSuite> Kdf for Metered<C> {
    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        count(&self.meter.hkdf);
        self.inner.hkdf_extract(hash, salt, ikm)
    }

    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        self.inner.hkdf_expand(hash, prk, info, okm)
    }

    // Provided on top of the two above; forwarded so the inner suite's
    // one-call HKDF runs, and counted once.
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        count(&self.meter.hkdf);
        self.inner.hkdf_sha256(ikm, salt, info, okm)
    }
}

impl<C: CipherSuite> SecureRandom for Metered<C> {
    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        self.meter
            .random_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.fill_random(buf)
    }
}

impl<C: CipherSuite> RsaKek for Metered<C> {
    fn generate_rsa(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>> {
        count(&self.meter.rsa_keys);
        self.inner.generate_rsa(bits)
    }

    fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
        count(&self.meter.rsa_wraps);
        self.inner.rsa_oaep_wrap(spki_der, dek)
    }

    fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        self.inner.rsa_check_key_pair(pkcs8_der)
    }

    fn rsa_oaep_unwrap(&self, pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        count(&self.meter.rsa_unwraps);
        self.inner.rsa_oaep_unwrap(pkcs8_der, wrapped)
    }
}

impl<C: CipherSuite> CipherSuite for Metered<C> {
    fn name(&self) -> &'static str {
        "metered"
    }
}

fn main() -> Result<()> {
    use keyserver::testing::{cipher, ec, run};

    // The conformance kit, check by check (in a test file, the
    // `cipher_conformance!` line above does the same).
    let suite = Metered::new(RustCrypto::new());
    cipher::envelope_vectors(&suite);
    cipher::hkdf_rfc5869(&suite);
    cipher::aes_gcm_known_answers(&suite);
    cipher::aes_gcm_in_place(&suite);
    cipher::aes_gcm_append(&suite);
    cipher::hkdf_edges(&suite);
    cipher::random_bytes(&suite);
    cipher::envelope_v2_vectors(&suite);
    cipher::envelope_v2_sessions(&suite);
    cipher::envelope_round_trips(&suite);
    cipher::envelope_rejections(&suite);
    cipher::stream_vectors_and_round_trips(&suite);
    cipher::stream_failures_midway(&suite);
    cipher::stream_rejections(&suite);
    cipher::rsa_wrap_unwrap(&suite);
    cipher::rsa_key_pair_check(&suite);
    cipher::rsa_large_fixtures(&suite);
    assert!(
        !ec::ec_supported(&suite),
        "EC is the inner suite's, not offered"
    );
    println!("Metered<RustCrypto> passes the cipher conformance kit");

    // And it serves keys like any other suite, its meter counting.
    let keys = KeyServer::new(Metered::new(RustCrypto::new()), MemoryStorage::new());
    run(async {
        let kek = keys.generate().await?;
        let sealed = keys.encrypt(&kek, b"Stephan Richter").await?;
        assert_eq!(&keys.decrypt(&kek, &sealed).await?[..], b"Stephan Richter");
        Ok::<(), keyserver::Error>(())
    })?;
    let meter = &keys.suite().meter;
    println!("{keys}: generate, encrypt, decrypt; {meter:?}");
    assert_eq!(meter.rsa_keys.load(Ordering::Relaxed), 1);
    assert!(meter.gcm_seals.load(Ordering::Relaxed) >= 1);
    Ok(())
}
