//! The `AwsLc` cipher suite: AWS-LC through aws-lc-rs (AES-GCM, ECDH,
//! SHA-3) and, where aws-lc-rs has no safe API for what keyserver needs,
//! through AWS-LC's own C API in one reviewed FFI module (RSA of every
//! size keyserver uses, HKDF, deterministic ML-KEM, SHAKE256).
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built only on
//! the public plugin API of `keyserver-core`, as a third party's backend would be.
//! Applications reach it as `keyserver::backends` with its Cargo feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_192_GCM, AES_256_GCM};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, ECDH_P256, ECDH_P384, ECDH_P521};
use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
use zeroize::{Zeroize, Zeroizing};

use keyserver_core::plugin::{
    ec_pkcs8_der, ec_private_parts, CipherSuite, HkdfHash, MlKem, GCM_MAX_PLAINTEXT, GCM_NONCE_LEN,
    GCM_TAG_LEN, MAX_RSA_BITS, MIN_RSA_BITS,
};
use keyserver_core::plugin::{Aead, EcKek, HybridKek, Kdf, RsaKek, SecureRandom};
use keyserver_core::{Curve, Error, Result};

const NAME: &str = "awslc";

/// The cipher suite built on AWS-LC (aws-lc-rs): the AES-GCM of the
/// fastest library on x86-64 and ARM (AVX-512 and VAES where the CPU has
/// them), RSA, ECDH, ML-KEM and SHA-3, with randomness from AWS-LC's
/// CTR-DRBG (SP 800-90A), seeded and reseeded from the operating system.
///
/// Feature `cipher-awslc`. With feature `cipher-awslc-fips` the same suite
/// runs on the FIPS 140-3 validated AWS-LC module, and
/// [`CipherSuite::fips_validated`] says so.
///
/// # Example
///
/// ```
/// use keyserver_core::crypto::RsaKek;
/// use keyserver_core::Kek;
/// use keyserver_awslc::AwsLc;
///
/// let suite = AwsLc::new();
/// let kek = Kek::from_pkcs8_der(&suite.generate_rsa(2048)?)?;
/// let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &[42; 16])?;
/// let dek = suite.rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)?;
/// assert_eq!(&dek[..], &[42; 16]);
/// # Ok::<(), keyserver_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsLc {
    _private: (),
}

impl AwsLc {
    /// The suite. It holds no state.
    pub const fn new() -> Self {
        AwsLc { _private: () }
    }
}

fn crypto(operation: &'static str) -> Error {
    Error::Crypto {
        suite: NAME,
        operation,
    }
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidKey {
        reason: reason.into(),
    }
}

/// The SP 800-38D limit on one AES-GCM plaintext, as a typed error.
fn check_gcm_len(len: usize) -> Result<()> {
    if len as u64 > GCM_MAX_PLAINTEXT {
        return Err(Error::TooLarge {
            size: len as u64,
            limit: GCM_MAX_PLAINTEXT,
        });
    }
    Ok(())
}

fn gcm_key(key: &[u8]) -> Result<LessSafeKey> {
    let algorithm = match key.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        _ => return Err(invalid("wrong AES key length")),
    };
    let key = UnboundKey::new(algorithm, key).map_err(|_| invalid("wrong AES key length"))?;
    Ok(LessSafeKey::new(key))
}

fn ecdh_alg(curve: Curve) -> Result<&'static agreement::Algorithm> {
    Ok(match curve {
        Curve::P256 => &ECDH_P256,
        Curve::P384 => &ECDH_P384,
        Curve::P521 => &ECDH_P521,
        _ => return Err(keyserver_core::plugin::unsupported(NAME, "this curve")),
    })
}

/// An ECDH private key from its big-endian scalar: AWS-LC refuses zero and
/// scalars at or above the group order.
fn ec_secret(curve: Curve, scalar: &[u8]) -> Result<agreement::PrivateKey> {
    if scalar.len() != curve.field_len() {
        return Err(invalid("the EC private scalar has the wrong length"));
    }
    agreement::PrivateKey::from_private_key(ecdh_alg(curve)?, scalar)
        .map_err(|_| invalid("EC private scalar out of range"))
}

fn ec_point(key: &agreement::PrivateKey) -> Result<Vec<u8>> {
    let public = key
        .compute_public_key()
        .map_err(|_| crypto("EC public key"))?;
    Ok(public.as_ref().to_vec())
}

impl Aead for AwsLc {
    fn aes_gcm_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN]> {
        let key = gcm_key(key)?;
        if buf.len() as u64 > GCM_MAX_PLAINTEXT {
            return Err(Error::TooLarge {
                size: buf.len() as u64,
                limit: GCM_MAX_PLAINTEXT,
            });
        }
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| crypto("AES-GCM seal"))?;
        let mut out = [0u8; GCM_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn aes_gcm_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()> {
        let key = gcm_key(key)?;
        let opened = key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            buf,
        );
        if opened.is_err() {
            // AWS-LC may have written into the buffer: nothing
            // unauthenticated reaches the caller.
            buf.zeroize();
            return Err(Error::DecryptionFailed);
        }
        Ok(())
    }

    fn aes_gcm_seal_append(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        check_gcm_len(plaintext.len())?;
        ffi::gcm_seal_append(key, nonce, aad, plaintext, out)
    }

    fn aes_gcm_prepare(
        &self,
        key: &[u8],
    ) -> Result<Option<Box<dyn keyserver_core::plugin::GcmKey>>> {
        Ok(Some(Box::new(ffi::PreparedGcm::new(key)?)))
    }

    fn aes_gcm_open_append(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; GCM_TAG_LEN],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        ffi::gcm_open_append(key, nonce, aad, ciphertext, tag, out)
    }
}

impl Kdf for AwsLc {
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        ffi::hkdf(HkdfHash::Sha256, ikm, salt, info, okm)
    }

    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        ffi::hkdf_extract(hash, salt, ikm)
    }

    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        ffi::hkdf_expand(hash, prk, info, okm)
    }
}

impl SecureRandom for AwsLc {
    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(buf).map_err(|_| crypto("random number generator"))
    }
}

impl RsaKek for AwsLc {
    fn generate_rsa(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>> {
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(Error::Policy {
                reason: format!("RSA key size {bits} outside 2048..=16384 bits"),
            });
        }
        if !bits.is_multiple_of(128) {
            // AWS-LC would round the size down (or, as the FIPS module,
            // refuse it): say so rather than return a smaller key.
            return Err(Error::Policy {
                reason: format!(
                    "the awslc suite makes RSA keys of a multiple of 128 bits, not {bits}"
                ),
            });
        }
        ffi::rsa_generate(bits)
    }

    fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
        ffi::rsa_oaep_encrypt(spki_der, dek)
    }

    fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        ffi::rsa_check(pkcs8_der)
    }

    fn rsa_oaep_unwrap(&self, pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        ffi::rsa_oaep_decrypt(pkcs8_der, wrapped)
    }
}

impl EcKek for AwsLc {
    fn generate_ec(&self, curve: Curve) -> Result<Zeroizing<Vec<u8>>> {
        let key = agreement::PrivateKey::generate(ecdh_alg(curve)?)
            .map_err(|_| crypto("EC key generation"))?;
        let scalar: EcPrivateKeyBin = key.as_be_bytes().map_err(|_| crypto("EC key export"))?;
        let scalar = Zeroizing::new(scalar.as_ref().to_vec());
        ec_pkcs8_der(curve, &scalar, &ec_point(&key)?)
    }

    fn ec_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        let key = ec_private_parts(pkcs8_der)?;
        let public = ec_point(&ec_secret(key.curve, key.scalar)?)?;
        if public != key.point {
            return Err(invalid("the private key does not match its public key"));
        }
        Ok(())
    }

    fn ecdh(&self, pkcs8_der: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = ec_private_parts(pkcs8_der)?;
        keyserver_core::plugin::check_point_form(key.curve, peer_point)?;
        let secret = ec_secret(key.curve, key.scalar)?;
        // aws-lc-rs checks that the point is on the curve (and so is not
        // the identity, which has no uncompressed encoding).
        let peer = UnparsedPublicKey::new(ecdh_alg(key.curve)?, peer_point);
        agreement::agree(
            &secret,
            peer,
            invalid("the EC public key is not a point of its curve"),
            |shared| Ok(Zeroizing::new(shared.to_vec())),
        )
    }

    fn ec_public_key(&self, curve: Curve, scalar: &[u8]) -> Result<Vec<u8>> {
        ec_point(&ec_secret(curve, scalar)?)
    }
}

impl HybridKek for AwsLc {
    fn ml_kem_keygen(&self, params: MlKem, seed: &[u8]) -> Result<Vec<u8>> {
        ffi::ml_kem_keygen(params, seed)
    }

    fn ml_kem_encaps(
        &self,
        params: MlKem,
        ek: &[u8],
        m: &[u8],
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        ffi::ml_kem_encaps(params, ek, m)
    }

    fn ml_kem_decaps(&self, params: MlKem, seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        ffi::ml_kem_decaps(params, seed, ct)
    }

    fn sha3_256(&self, data: &[u8]) -> Result<[u8; 32]> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA3_256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Ok(out)
    }

    fn shake256(&self, data: &[u8], out: &mut [u8]) -> Result<()> {
        ffi::shake256(data, out)
    }
}

impl CipherSuite for AwsLc {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Whether the linked AWS-LC is the FIPS 140-3 validated module running
    /// in FIPS mode (feature `cipher-awslc-fips`), as AWS-LC itself reports
    /// it (`FIPS_mode()`).
    ///
    /// ```
    /// use keyserver_core::CipherSuite;
    ///
    /// let fips = keyserver_awslc::AwsLc::new().fips_validated();
    /// assert_eq!(fips, cfg!(feature = "fips"));
    /// ```
    fn fips_validated(&self) -> bool {
        aws_lc_rs::try_fips_mode().is_ok()
    }

    fn ec(&self) -> Option<&dyn EcKek> {
        Some(self)
    }

    fn hybrid(&self) -> Option<&dyn HybridKek> {
        Some(self)
    }
}

/// AWS-LC's C API (`aws-lc-sys`, or `aws-lc-fips-sys` with the FIPS
/// module: whichever aws-lc-rs links) for what aws-lc-rs does not offer
/// safely: RSA keys up to 16384 bits (aws-lc-rs stops at 8192, below the
/// 15360 bits of strength 256, and generates only 2048/3072/4096/8192), HKDF-Extract and -Expand with an exported PRK, ML-KEM from a seed
/// and with a caller's `m` (FIPS 203 `_internal` functions, for the
/// known-answer tests and the hybrid KEM's seed-based keys), and SHAKE256.
///
/// Every pointer is owned by a guard that frees it; every secret AWS-LC
/// hands back is copied into a zeroizing buffer and cleansed at the source.
/// Every failure clears AWS-LC's error queue and becomes a typed error.
#[allow(unsafe_code)]
mod ffi;

#[cfg(test)]
mod tests {
    use super::AwsLc;
    use keyserver_core::crypto::Aead;
    use keyserver_core::Error;

    /// AWS-LC decrypts into the output before it compares the tag: a
    /// failed open leaves nothing of it in `out`'s spare capacity (AWS-LC
    /// zeroes its output on failure, and `gcm_open_append` wipes it too).
    #[test]
    #[allow(unsafe_code)]
    fn a_failed_open_wipes_the_memory_it_wrote_into() {
        let suite = AwsLc::new();
        let (key, nonce) = ([7u8; 16], [3u8; 12]);
        let plaintext = vec![0x5c; 4096];
        let sealed = suite.aes_gcm_seal(&key, &nonce, b"", &plaintext).unwrap();
        let (body, tag) = sealed.split_at(plaintext.len());
        let mut tag: [u8; 16] = tag.try_into().unwrap();
        tag[0] ^= 1;
        let mut out = vec![0xAA; 2 * plaintext.len()];
        out.clear();
        assert!(matches!(
            suite.aes_gcm_open_append(&key, &nonce, b"", body, &tag, &mut out),
            Err(Error::DecryptionFailed)
        ));
        assert!(out.is_empty());
        // SAFETY: every byte of the capacity was initialised (the 0xAA
        // fill, then what AWS-LC and the wipe wrote); out is not used again.
        let spare = unsafe { std::slice::from_raw_parts(out.as_ptr(), plaintext.len()) };
        assert!(spare.iter().all(|&b| b == 0), "unauthenticated bytes left");
    }
}
