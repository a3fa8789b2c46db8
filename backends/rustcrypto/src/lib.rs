//! The `RustCrypto` cipher suite: rsa, aes-gcm, hkdf and sha2.
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built only on
//! the public plugin API of `keyserver-core`, as a third party's backend would be.
//! Applications reach it as `keyserver::backends` with its Cargo feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use der::Decode;
use getrandom::SysRng;
use hkdf::Hkdf;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::sha2::Sha256;
use rsa::{BoxedUint, PrivateKey, PublicKey};
use zeroize::{Zeroize, Zeroizing};

use keyserver_core::plugin::{
    ec_private_parts, rsa_public_parts, CipherSuite, HkdfHash, MlKem, GCM_MAX_PLAINTEXT,
    GCM_NONCE_LEN, GCM_TAG_LEN, MAX_RSA_BITS, MIN_RSA_BITS,
};
use keyserver_core::plugin::{Aead, EcKek, HybridKek, Kdf, RsaKek, SecureRandom};
use keyserver_core::{Curve, Error, Result};

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

const NAME: &str = "rustcrypto";

/// The cipher suite built on the pure-Rust RustCrypto crates: `rsa` 0.10
/// (constant-time big integers, blinded private operations), `aes-gcm`,
/// `hkdf`, `sha2`, with randomness from the OS CSPRNG (`getrandom`).
///
/// Feature `cipher-rustcrypto`.
///
/// # Example
///
/// ```
/// use keyserver_core::crypto::RsaKek;
/// use keyserver_core::Kek;
/// use keyserver_rustcrypto::RustCrypto;
///
/// let suite = RustCrypto::new();
/// let kek = Kek::from_pkcs8_der(&suite.generate_rsa(2048)?)?;
/// let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &[42; 16])?;
/// let dek = suite.rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)?;
/// assert_eq!(&dek[..], &[42; 16]);
/// # Ok::<(), keyserver_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCrypto {
    _private: (),
}

impl RustCrypto {
    /// The suite. It holds no state.
    pub const fn new() -> Self {
        RustCrypto { _private: () }
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

/// A big-endian unsigned integer of exactly its own byte width.
fn uint(bytes: &[u8]) -> Result<BoxedUint> {
    let bits = u32::try_from(bytes.len() * 8).map_err(|_| invalid("integer too large"))?;
    BoxedUint::from_be_slice(bytes, bits.max(64)).map_err(|_| invalid("malformed integer"))
}

/// An RSA public key up to `MAX_RSA_BITS` (rsa's own SPKI parser stops at
/// 8192 bits, below the 15360 bits strength 256 needs).
fn public_key(spki_der: &[u8]) -> Result<PublicKey> {
    let (n, e) = rsa_public_parts(spki_der)?;
    PublicKey::new_with_size_limits(uint(n)?, uint(e)?, MIN_RSA_BITS..=MAX_RSA_BITS)
        .map_err(|_| invalid("unacceptable RSA public key"))
}

fn gcm_seal<A: AeadInOut + KeyInit>(
    key: &[u8],
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; GCM_TAG_LEN]> {
    let cipher = A::new_from_slice(key).map_err(|_| invalid("wrong AES key length"))?;
    let nonce = aes_gcm::aead::Nonce::<A>::try_from(&nonce[..]).map_err(|_| crypto("nonce"))?;
    let size = buf.len() as u64;
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, buf.into())
        .map_err(|_| Error::TooLarge {
            size,
            limit: GCM_MAX_PLAINTEXT,
        })?;
    let mut out = [0u8; GCM_TAG_LEN];
    out.copy_from_slice(&tag);
    Ok(out)
}

fn gcm_open<A: AeadInOut + KeyInit>(
    key: &[u8],
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; GCM_TAG_LEN],
) -> Result<()> {
    let cipher = A::new_from_slice(key).map_err(|_| invalid("wrong AES key length"))?;
    let nonce = aes_gcm::aead::Nonce::<A>::try_from(&nonce[..]).map_err(|_| crypto("nonce"))?;
    let tag = aes_gcm::aead::Tag::<A>::try_from(&tag[..]).map_err(|_| crypto("tag"))?;
    // aes-gcm checks the tag before it decrypts; zero the buffer on failure
    // anyway, as the trait promises.
    cipher
        .decrypt_inout_detached(&nonce, aad, (&mut *buf).into(), &tag)
        .map_err(|_| {
            buf.zeroize();
            Error::DecryptionFailed
        })
}

/// EC key generation, key-pair check and ECDH on one curve crate.
macro_rules! ec_curve {
    ($module:ident, $krate:ident) => {
        mod $module {
            use zeroize::Zeroizing;
            use $krate::elliptic_curve::pkcs8::EncodePrivateKey;
            use $krate::elliptic_curve::sec1::ToSec1Point;
            use $krate::elliptic_curve::Generate;
            use $krate::{PublicKey, SecretKey};

            use super::{crypto, invalid};
            use keyserver_core::Result;

            pub(super) fn generate() -> Result<Zeroizing<Vec<u8>>> {
                let key = SecretKey::try_generate_from_rng(&mut getrandom::SysRng)
                    .map_err(|_| crypto("random number generator"))?;
                let doc = key.to_pkcs8_der().map_err(|_| crypto("PKCS#8 encoding"))?;
                Ok(Zeroizing::new(doc.as_bytes().to_vec()))
            }

            fn secret(scalar: &[u8]) -> Result<SecretKey> {
                // Refuses zero and scalars at or above the group order.
                SecretKey::from_slice(scalar).map_err(|_| invalid("EC private scalar out of range"))
            }

            pub(super) fn public(scalar: &[u8]) -> Result<Vec<u8>> {
                Ok(secret(scalar)?
                    .public_key()
                    .to_sec1_point(false)
                    .as_bytes()
                    .to_vec())
            }

            pub(super) fn check(scalar: &[u8], point: &[u8]) -> Result<()> {
                let public = secret(scalar)?.public_key().to_sec1_point(false);
                if public.as_bytes() != point {
                    return Err(invalid("the private key does not match its public key"));
                }
                Ok(())
            }

            pub(super) fn ecdh(scalar: &[u8], peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
                // Checks that the point is on the curve and not the identity.
                let peer = PublicKey::from_sec1_bytes(peer)
                    .map_err(|_| invalid("the EC public key is not a point of its curve"))?;
                let shared = $krate::elliptic_curve::ecdh::diffie_hellman(
                    secret(scalar)?.to_nonzero_scalar(),
                    peer.as_affine(),
                );
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
        }
    };
}

ec_curve!(ec_p256, p256);
ec_curve!(ec_p384, p384);
ec_curve!(ec_p521, p521);

/// ML-KEM on one parameter set of the `ml-kem` crate.
macro_rules! ml_kem_params {
    ($module:ident, $params:ty) => {
        mod $module {
            use ml_kem::array::Array;
            use ml_kem::{Decapsulate, DecapsulationKey, EncapsulationKey, KeyExport};
            use zeroize::{Zeroize, Zeroizing};

            use super::invalid;
            use keyserver_core::Result;

            fn decapsulation_key(seed: &[u8]) -> Result<DecapsulationKey<$params>> {
                let mut seed = ml_kem::Seed::try_from(seed)
                    .map_err(|_| invalid("an ML-KEM seed is 64 bytes"))?;
                let key = DecapsulationKey::<$params>::from_seed(seed.clone());
                seed.as_mut_slice().zeroize();
                Ok(key)
            }

            pub(super) fn keygen(seed: &[u8]) -> Result<Vec<u8>> {
                Ok(decapsulation_key(seed)?
                    .encapsulation_key()
                    .to_bytes()
                    .to_vec())
            }

            pub(super) fn encaps(ek: &[u8], m: &[u8]) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
                let bad = || invalid("not an ML-KEM encapsulation key");
                let ek = Array::try_from(ek).map_err(|_| bad())?;
                // The FIPS 203 §7.2 modulus check.
                let ek = EncapsulationKey::<$params>::new(&ek).map_err(|_| bad())?;
                let mut m = ml_kem::B32::try_from(m).map_err(|_| invalid("m is 32 bytes"))?;
                let (ct, mut ss) = ek.encapsulate_deterministic(&m);
                m.as_mut_slice().zeroize();
                let shared = Zeroizing::new(ss.to_vec());
                ss.as_mut_slice().zeroize();
                Ok((ct.to_vec(), shared))
            }

            pub(super) fn decaps(seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
                let ct = ml_kem::Ciphertext::<$params>::try_from(ct)
                    .map_err(|_| invalid("wrong ML-KEM ciphertext length"))?;
                let mut ss = decapsulation_key(seed)?.decapsulate(&ct);
                let shared = Zeroizing::new(ss.to_vec());
                ss.as_mut_slice().zeroize();
                Ok(shared)
            }
        }
    };
}

ml_kem_params!(ml_kem_768, ml_kem::MlKem768);
ml_kem_params!(ml_kem_1024, ml_kem::MlKem1024);

fn hkdf_extract<H>(salt: &[u8], ikm: &[u8]) -> Zeroizing<Vec<u8>>
where
    H: hkdf::hmac::EagerHash + hkdf::hmac::digest::OutputSizeUser,
    hkdf::hmac::Hmac<H>: hkdf::hmac::KeyInit,
{
    let (prk, _) = Hkdf::<H>::extract(Some(salt), ikm);
    Zeroizing::new(prk.to_vec())
}

fn hkdf_expand<H>(prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()>
where
    H: hkdf::hmac::EagerHash + hkdf::hmac::digest::OutputSizeUser,
    hkdf::hmac::Hmac<H>: hkdf::hmac::KeyInit,
{
    Hkdf::<H>::from_prk(prk)
        .map_err(|_| crypto("HKDF pseudorandom key too short"))?
        .expand(info, okm)
        .map_err(|_| crypto("HKDF output too long"))
}

impl Aead for RustCrypto {
    fn aes_gcm_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN]> {
        match key.len() {
            16 => gcm_seal::<Aes128Gcm>(key, nonce, aad, buf),
            24 => gcm_seal::<Aes192Gcm>(key, nonce, aad, buf),
            32 => gcm_seal::<Aes256Gcm>(key, nonce, aad, buf),
            _ => Err(invalid("wrong AES key length")),
        }
    }

    fn aes_gcm_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()> {
        match key.len() {
            16 => gcm_open::<Aes128Gcm>(key, nonce, aad, buf, tag),
            24 => gcm_open::<Aes192Gcm>(key, nonce, aad, buf, tag),
            32 => gcm_open::<Aes256Gcm>(key, nonce, aad, buf, tag),
            _ => Err(invalid("wrong AES key length")),
        }
    }
}

impl Kdf for RustCrypto {
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        Hkdf::<Sha256>::new(Some(salt), ikm)
            .expand(info, okm)
            .map_err(|_| crypto("HKDF output too long"))
    }

    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        Ok(match hash {
            HkdfHash::Sha256 => hkdf_extract::<Sha256>(salt, ikm),
            HkdfHash::Sha384 => hkdf_extract::<sha2::Sha384>(salt, ikm),
            HkdfHash::Sha512 => hkdf_extract::<sha2::Sha512>(salt, ikm),
            _ => return Err(keyserver_core::plugin::unsupported(NAME, "this HKDF hash")),
        })
    }

    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        match hash {
            HkdfHash::Sha256 => hkdf_expand::<Sha256>(prk, info, okm),
            HkdfHash::Sha384 => hkdf_expand::<sha2::Sha384>(prk, info, okm),
            HkdfHash::Sha512 => hkdf_expand::<sha2::Sha512>(prk, info, okm),
            _ => Err(keyserver_core::plugin::unsupported(NAME, "this HKDF hash")),
        }
    }
}

impl SecureRandom for RustCrypto {
    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|_| crypto("random number generator"))
    }
}

impl RsaKek for RustCrypto {
    fn generate_rsa(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>> {
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(Error::Policy {
                reason: format!("RSA key size {bits} outside 2048..=16384 bits"),
            });
        }
        let key = PrivateKey::new(&mut SysRng, bits).map_err(|_| crypto("RSA key generation"))?;
        let doc = key.to_pkcs8_der().map_err(|_| crypto("PKCS#8 encoding"))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
        public_key(spki_der)?
            .oaep_encrypt_with_rng::<Sha256, _>(&mut SysRng, dek)
            .map_err(|_| crypto("RSA-OAEP encryption"))
    }

    fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        let mismatch = || invalid("the private key does not match its public key");
        // Loading checks n, e, d and the primes (rsa's `from_components`);
        // the CRT values are derived from them, so the key's own encoding
        // must be exactly the one they give.
        let key = PrivateKey::from_pkcs8_der(pkcs8_der).map_err(|_| mismatch())?;
        key.validate().map_err(|_| mismatch())?;
        let info = pkcs8::PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|_| mismatch())?;
        let canonical = key.to_pkcs1_der().map_err(|_| mismatch())?;
        if canonical.as_bytes() != info.private_key.as_bytes() {
            return Err(mismatch());
        }
        Ok(())
    }

    fn rsa_oaep_unwrap(&self, pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = PrivateKey::from_pkcs8_der(pkcs8_der)
            .map_err(|_| invalid("not a valid RSA private key"))?;
        // Blinded with the OS RNG; every failure is the same opaque error.
        key.oaep_decrypt_with_rng::<Sha256, _>(&mut SysRng, wrapped)
            .map(Zeroizing::new)
            .map_err(|_| Error::DecryptionFailed)
    }
}

impl EcKek for RustCrypto {
    fn generate_ec(&self, curve: Curve) -> Result<Zeroizing<Vec<u8>>> {
        match curve {
            Curve::P256 => ec_p256::generate(),
            Curve::P384 => ec_p384::generate(),
            Curve::P521 => ec_p521::generate(),
            _ => Err(keyserver_core::plugin::unsupported(NAME, "this curve")),
        }
    }

    fn ec_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        let key = ec_private_parts(pkcs8_der)?;
        match key.curve {
            Curve::P256 => ec_p256::check(key.scalar, key.point),
            Curve::P384 => ec_p384::check(key.scalar, key.point),
            Curve::P521 => ec_p521::check(key.scalar, key.point),
            _ => Err(keyserver_core::plugin::unsupported(NAME, "this curve")),
        }
    }

    fn ecdh(&self, pkcs8_der: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = ec_private_parts(pkcs8_der)?;
        keyserver_core::plugin::check_point_form(key.curve, peer_point)?;
        match key.curve {
            Curve::P256 => ec_p256::ecdh(key.scalar, peer_point),
            Curve::P384 => ec_p384::ecdh(key.scalar, peer_point),
            Curve::P521 => ec_p521::ecdh(key.scalar, peer_point),
            _ => Err(keyserver_core::plugin::unsupported(NAME, "this curve")),
        }
    }

    fn ec_public_key(&self, curve: Curve, scalar: &[u8]) -> Result<Vec<u8>> {
        if scalar.len() != curve.field_len() {
            return Err(invalid("the EC private scalar has the wrong length"));
        }
        match curve {
            Curve::P256 => ec_p256::public(scalar),
            Curve::P384 => ec_p384::public(scalar),
            Curve::P521 => ec_p521::public(scalar),
            _ => Err(keyserver_core::plugin::unsupported(NAME, "this curve")),
        }
    }
}

impl HybridKek for RustCrypto {
    fn ml_kem_keygen(&self, params: MlKem, seed: &[u8]) -> Result<Vec<u8>> {
        match params {
            MlKem::MlKem768 => ml_kem_768::keygen(seed),
            MlKem::MlKem1024 => ml_kem_1024::keygen(seed),
            _ => Err(keyserver_core::plugin::unsupported(
                NAME,
                "this ML-KEM parameter set",
            )),
        }
    }

    fn ml_kem_encaps(
        &self,
        params: MlKem,
        ek: &[u8],
        m: &[u8],
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        match params {
            MlKem::MlKem768 => ml_kem_768::encaps(ek, m),
            MlKem::MlKem1024 => ml_kem_1024::encaps(ek, m),
            _ => Err(keyserver_core::plugin::unsupported(
                NAME,
                "this ML-KEM parameter set",
            )),
        }
    }

    fn ml_kem_decaps(&self, params: MlKem, seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match params {
            MlKem::MlKem768 => ml_kem_768::decaps(seed, ct),
            MlKem::MlKem1024 => ml_kem_1024::decaps(seed, ct),
            _ => Err(keyserver_core::plugin::unsupported(
                NAME,
                "this ML-KEM parameter set",
            )),
        }
    }

    fn sha3_256(&self, data: &[u8]) -> Result<[u8; 32]> {
        use sha3::Digest;
        Ok(sha3::Sha3_256::digest(data).into())
    }

    fn shake256(&self, data: &[u8], out: &mut [u8]) -> Result<()> {
        use sha3::digest::{ExtendableOutput, Update, XofReader};
        let mut xof = shake::Shake256::default();
        xof.update(data);
        xof.finalize_xof().read(out);
        Ok(())
    }
}

impl CipherSuite for RustCrypto {
    fn name(&self) -> &'static str {
        NAME
    }

    fn ec(&self) -> Option<&dyn EcKek> {
        Some(self)
    }

    fn hybrid(&self) -> Option<&dyn HybridKek> {
        Some(self)
    }
}
