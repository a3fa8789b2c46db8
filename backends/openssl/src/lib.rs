//! The `OpenSsl` cipher suite: the system OpenSSL 3 through the `openssl` crate.
//!
//! A crate of [keyserver](https://github.com/keyserver/keyserver), built only on
//! the public plugin API of `keyserver-core`, as a third party's backend would be.
//! Applications reach it as `keyserver::backends` with its Cargo feature.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use der::Decode;
use std::sync::OnceLock;

use openssl::bn::{BigNum, BigNumContext};
use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::encrypt::{Decrypter, Encrypter};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::pkey_ctx::{HkdfMode, PkeyCtx};
use openssl::rsa::{Padding, Rsa};
use pkcs8::PrivateKeyInfoRef;
use zeroize::{Zeroize, Zeroizing};

use keyserver_core::plugin::{
    ec_private_parts, rsa_public_parts, CipherSuite, EcPrivateParts, HkdfHash, GCM_MAX_PLAINTEXT,
    GCM_NONCE_LEN, GCM_TAG_LEN, MAX_RSA_BITS, MIN_RSA_BITS,
};
use keyserver_core::plugin::{Aead, EcKek, Kdf, RsaKek, SecureRandom};
use keyserver_core::{Curve, Error, Result};

const NAME: &str = "openssl";

/// The cipher suite built on the system's OpenSSL (3.x) through the `openssl`
/// crate: RSA key generation, RSA-OAEP with SHA-256 as both the OAEP digest
/// and the MGF1 digest (set explicitly: OpenSSL's MGF1 default is SHA-1),
/// HKDF-SHA256 and AES-GCM. Salts, nonces and DEKs come from the OS CSPRNG
/// (`getrandom`), as with the RustCrypto suite.
///
/// It produces byte-identical envelopes and records to
/// `RustCrypto`, and keys made by either are used by the
/// other: a deployment can switch suites without losing a key or a ciphertext.
///
/// Feature `cipher-openssl`.
///
/// # Example
///
/// ```
/// use keyserver_core::crypto::RsaKek;
/// use keyserver_core::Kek;
/// use keyserver_openssl::OpenSsl;
///
/// let suite = OpenSsl::new();
/// let kek = Kek::from_pkcs8_der(&suite.generate_rsa(2048)?)?;
/// let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &[42; 16])?;
/// assert_eq!(&suite.rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)?[..], &[42; 16]);
/// # Ok::<(), keyserver_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenSsl {
    _private: (),
}

impl OpenSsl {
    /// The suite. It holds no state.
    pub const fn new() -> Self {
        OpenSsl { _private: () }
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

fn check_rsa_bits(bits: u32) -> Result<()> {
    let bits = bits as usize;
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(invalid("RSA key size outside 2048..=16384 bits"))
    }
}

/// A big number from big-endian bytes (OpenSSL clears RSA key numbers when it
/// frees them).
fn bn(u: der::asn1::UintRef<'_>) -> Result<BigNum> {
    BigNum::from_slice(u.as_bytes()).map_err(|_| invalid("malformed RSA key"))
}

/// Loads a PKCS#8 RSA private key from its components. This skips OpenSSL 3's
/// decoder framework, whose lookups and locks cost a third of a server-side
/// unwrap when done per request (measured: see BENCHMARKS.md).
fn private_key(pkcs8_der: &[u8]) -> Result<PKey<Private>> {
    let info =
        PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|_| invalid("not a PKCS#8 private key"))?;
    if info.algorithm.oid != pkcs1::ALGORITHM_OID {
        return Err(invalid("not an RSA private key"));
    }
    let k = pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
        .map_err(|_| invalid("malformed RSA private key"))?;
    if k.other_prime_infos.is_some() {
        return Err(invalid("multi-prime RSA keys are not supported"));
    }
    let rsa = Rsa::from_private_components(
        bn(k.modulus)?,
        bn(k.public_exponent)?,
        bn(k.private_exponent)?,
        bn(k.prime1)?,
        bn(k.prime2)?,
        bn(k.exponent1)?,
        bn(k.exponent2)?,
        bn(k.coefficient)?,
    )
    .map_err(|_| invalid("not a valid RSA private key"))?;
    check_rsa_bits(rsa.size() * 8)?;
    PKey::from_rsa(rsa).map_err(|_| invalid("not a valid RSA private key"))
}

/// Whether the components of a PKCS#1 private key are one consistent RSA
/// key pair: n = p·q (so p and q are the factors of the public modulus),
/// d·e ≡ 1 mod p−1 and mod q−1, dp = d mod p−1, dq = d mod q−1,
/// qinv·q ≡ 1 mod p. Big-number arithmetic only (no primality test: n = p·q
/// with the public n already fixes p and q).
fn consistent(k: &pkcs1::RsaPrivateKeyRef<'_>) -> std::result::Result<bool, ErrorStack> {
    let bn = |u: der::asn1::UintRef<'_>| BigNum::from_slice(u.as_bytes());
    let (n, e, d) = (
        bn(k.modulus)?,
        bn(k.public_exponent)?,
        bn(k.private_exponent)?,
    );
    let (p, q) = (bn(k.prime1)?, bn(k.prime2)?);
    let (dp, dq, qinv) = (bn(k.exponent1)?, bn(k.exponent2)?, bn(k.coefficient)?);
    let one = BigNum::from_u32(1)?;
    if p <= one || q <= one {
        return Ok(false);
    }
    let mut ctx = BigNumContext::new_secure()?;
    let mut t = BigNum::new_secure()?;
    t.checked_mul(&p, &q, &mut ctx)?;
    if t != n {
        return Ok(false);
    }
    let mut de = BigNum::new_secure()?;
    de.checked_mul(&d, &e, &mut ctx)?;
    for (prime, crt_exponent) in [(&p, &dp), (&q, &dq)] {
        let mut minus_one = BigNum::new()?;
        minus_one.checked_sub(prime, &one)?;
        t.nnmod(&de, &minus_one, &mut ctx)?;
        if t != one {
            return Ok(false);
        }
        t.nnmod(&d, &minus_one, &mut ctx)?;
        if t != *crt_exponent {
            return Ok(false);
        }
    }
    t.mod_mul(&qinv, &q, &p, &mut ctx)?;
    Ok(t == one)
}

/// Loads an RSA SubjectPublicKeyInfo from its components (see [`private_key`]).
fn public_key(spki_der: &[u8]) -> Result<PKey<Public>> {
    let (n, e) = rsa_public_parts(spki_der)?;
    let number = |b: &[u8]| BigNum::from_slice(b).map_err(|_| invalid("malformed RSA public key"));
    let rsa = Rsa::from_public_components(number(n)?, number(e)?)
        .map_err(|_| invalid("not a valid RSA public key"))?;
    check_rsa_bits(rsa.size() * 8)?;
    PKey::from_rsa(rsa).map_err(|_| invalid("not a valid RSA public key"))
}

/// The AES-GCM ciphers, fetched from the default provider once per process.
///
/// `Cipher::aes_128_gcm()` and friends are OpenSSL's legacy static objects:
/// every context initialised with one makes OpenSSL 3 fetch the provider's
/// implementation again (a name lookup under locks), which cost more than
/// sealing 1 KiB (measured: see BENCHMARKS.md). Explicitly fetched ciphers
/// are reference counted and safe to share between threads.
struct GcmCiphers {
    aes128: Cipher,
    aes192: Cipher,
    aes256: Cipher,
}

static GCM_CIPHERS: OnceLock<Option<GcmCiphers>> = OnceLock::new();

fn gcm_cipher(key: &[u8]) -> Result<&'static CipherRef> {
    let ciphers = GCM_CIPHERS
        .get_or_init(|| {
            Some(GcmCiphers {
                aes128: Cipher::fetch(None, "AES-128-GCM", None).ok()?,
                aes192: Cipher::fetch(None, "AES-192-GCM", None).ok()?,
                aes256: Cipher::fetch(None, "AES-256-GCM", None).ok()?,
            })
        })
        .as_ref()
        .ok_or(crypto("fetching AES-GCM from the OpenSSL provider"))?;
    match key.len() {
        16 => Ok(&ciphers.aes128),
        24 => Ok(&ciphers.aes192),
        32 => Ok(&ciphers.aes256),
        _ => Err(invalid("wrong AES key length")),
    }
}

/// `EVP_CipherUpdate` takes an `int` length: feed large buffers in pieces.
const UPDATE_PIECE: usize = 1 << 30;

/// Feeds the associated data (GCM accepts it in several updates; each
/// update takes an `int` length).
fn gcm_aad(ctx: &mut CipherCtx, aad: &[u8]) -> std::result::Result<(), ()> {
    for piece in aad.chunks(UPDATE_PIECE) {
        ctx.cipher_update(piece, None).map_err(|_| ())?;
    }
    Ok(())
}

/// Runs the AES-GCM data pass over `buf` in place (encrypting or decrypting,
/// as `ctx` was initialised).
fn gcm_update_in_place(ctx: &mut CipherCtx, buf: &mut [u8]) -> std::result::Result<(), ()> {
    for piece in buf.chunks_mut(UPDATE_PIECE) {
        let len = piece.len();
        // GCM is a stream mode: output length equals input length.
        let n = ctx.cipher_update_inplace(piece, len).map_err(|_| ())?;
        if n != len {
            return Err(());
        }
    }
    Ok(())
}

impl Aead for OpenSsl {
    fn aes_gcm_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN]> {
        let cipher = gcm_cipher(key)?;
        if buf.len() as u64 > GCM_MAX_PLAINTEXT {
            return Err(Error::TooLarge {
                size: buf.len() as u64,
                limit: GCM_MAX_PLAINTEXT,
            });
        }
        let fail = |_| crypto("AES-GCM encryption");
        // A fresh context per message: dropping it cleanses the key schedule.
        let mut ctx = CipherCtx::new().map_err(fail)?;
        ctx.encrypt_init(Some(cipher), Some(key), Some(nonce))
            .map_err(fail)?;
        gcm_aad(&mut ctx, aad).map_err(|()| crypto("AES-GCM encryption"))?;
        gcm_update_in_place(&mut ctx, buf).map_err(|()| crypto("AES-GCM encryption"))?;
        ctx.cipher_final(&mut []).map_err(fail)?;
        let mut tag = [0u8; GCM_TAG_LEN];
        ctx.tag(&mut tag).map_err(fail)?;
        Ok(tag)
    }

    fn aes_gcm_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()> {
        let cipher = gcm_cipher(key)?;
        if buf.len() as u64 > GCM_MAX_PLAINTEXT {
            return Err(Error::DecryptionFailed);
        }
        // OpenSSL decrypts before it checks the tag: on any failure, wipe
        // the unauthenticated plaintext.
        let result = (|| -> std::result::Result<(), ()> {
            let mut ctx = CipherCtx::new().map_err(|_| ())?;
            ctx.decrypt_init(Some(cipher), Some(key), Some(nonce))
                .map_err(|_| ())?;
            ctx.set_tag(tag).map_err(|_| ())?;
            gcm_aad(&mut ctx, aad)?;
            gcm_update_in_place(&mut ctx, buf)?;
            ctx.cipher_final(&mut []).map_err(|_| ())?;
            Ok(())
        })();
        result.map_err(|()| {
            buf.zeroize();
            Error::DecryptionFailed
        })
    }
}

impl Kdf for OpenSsl {
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        if okm.len() > 255 * 32 {
            return Err(crypto("HKDF output too long"));
        }
        if okm.is_empty() {
            return Ok(());
        }
        kdf::hkdf_sha256(ikm, salt, info, okm).map_err(|()| crypto("HKDF-SHA256"))
    }

    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let mut prk = Zeroizing::new(vec![0u8; hash.len()]);
        let mut ctx = hkdf_ctx(hash, HkdfMode::EXTRACT_ONLY)?;
        let fail = |_| crypto("HKDF-Extract");
        // An empty salt is HashLen zero bytes (RFC 5869), said explicitly.
        let zeros = [0u8; 64];
        let salt = if salt.is_empty() {
            &zeros[..hash.len()]
        } else {
            salt
        };
        ctx.set_hkdf_salt(salt).map_err(fail)?;
        ctx.set_hkdf_key(ikm).map_err(fail)?;
        let n = ctx.derive(Some(&mut prk)).map_err(fail)?;
        if n != hash.len() {
            return Err(crypto("HKDF-Extract"));
        }
        Ok(prk)
    }

    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        if okm.len() > 255 * hash.len() || prk.len() < hash.len() {
            return Err(crypto("HKDF-Expand"));
        }
        let mut ctx = hkdf_ctx(hash, HkdfMode::EXPAND_ONLY)?;
        let fail = |_| crypto("HKDF-Expand");
        ctx.set_hkdf_key(prk).map_err(fail)?;
        ctx.add_hkdf_info(info).map_err(fail)?;
        let n = ctx.derive(Some(okm)).map_err(fail)?;
        if n != okm.len() {
            return Err(crypto("HKDF-Expand"));
        }
        Ok(())
    }
}

impl SecureRandom for OpenSsl {
    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|_| crypto("random number generator"))
    }
}

impl RsaKek for OpenSsl {
    fn generate_rsa(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>> {
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(Error::Policy {
                reason: format!("RSA key size {bits} outside 2048..=16384 bits"),
            });
        }
        // ok: bits <= 16384 fits in u32.
        let rsa = Rsa::generate(bits as u32).map_err(|_| crypto("RSA key generation"))?;
        let pkey = PKey::from_rsa(rsa).map_err(|_| crypto("RSA key generation"))?;
        pkey.private_key_to_pkcs8()
            .map(Zeroizing::new)
            .map_err(|_| crypto("PKCS#8 encoding"))
    }

    fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
        let key = public_key(spki_der)?;
        let fail = |_| crypto("RSA-OAEP encryption");
        let mut enc = Encrypter::new(&key).map_err(fail)?;
        enc.set_rsa_padding(Padding::PKCS1_OAEP).map_err(fail)?;
        enc.set_rsa_oaep_md(MessageDigest::sha256()).map_err(fail)?;
        enc.set_rsa_mgf1_md(MessageDigest::sha256()).map_err(fail)?;
        let mut out = vec![0u8; enc.encrypt_len(dek).map_err(fail)?];
        let n = enc.encrypt(dek, &mut out).map_err(fail)?;
        out.truncate(n);
        Ok(out)
    }

    fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        let mismatch = || invalid("the private key does not match its public key");
        let info = PrivateKeyInfoRef::from_der(pkcs8_der).map_err(|_| mismatch())?;
        if info.algorithm.oid != pkcs1::ALGORITHM_OID {
            return Err(invalid("not an RSA private key"));
        }
        let k = pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
            .map_err(|_| mismatch())?;
        if k.other_prime_infos.is_some() {
            return Err(invalid("multi-prime RSA keys are not supported"));
        }
        match consistent(&k) {
            Ok(true) => Ok(()),
            Ok(false) => Err(mismatch()),
            Err(_) => Err(crypto("RSA key check")),
        }
    }

    fn rsa_oaep_unwrap(&self, pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = private_key(pkcs8_der)?;
        let setup = |_| crypto("RSA-OAEP setup");
        let mut dec = Decrypter::new(&key).map_err(setup)?;
        dec.set_rsa_padding(Padding::PKCS1_OAEP).map_err(setup)?;
        dec.set_rsa_oaep_md(MessageDigest::sha256())
            .map_err(setup)?;
        dec.set_rsa_mgf1_md(MessageDigest::sha256())
            .map_err(setup)?;
        let mut out = Zeroizing::new(vec![0u8; dec.decrypt_len(wrapped).map_err(setup)?]);
        // Every decryption failure is the same opaque error (no padding oracle).
        let n = dec
            .decrypt(wrapped, &mut out)
            .map_err(|_| Error::DecryptionFailed)?;
        out.truncate(n);
        Ok(out)
    }
}

impl EcKek for OpenSsl {
    fn generate_ec(&self, curve: Curve) -> Result<Zeroizing<Vec<u8>>> {
        let group = ec_group(curve)?;
        let key = EcKey::generate(&group).map_err(|_| crypto("EC key generation"))?;
        let pkey = PKey::from_ec_key(key).map_err(|_| crypto("EC key generation"))?;
        pkey.private_key_to_pkcs8()
            .map(Zeroizing::new)
            .map_err(|_| crypto("PKCS#8 encoding"))
    }

    fn ec_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        ec_private_key(&ec_private_parts(pkcs8_der)?).map(drop)
    }

    fn ecdh(&self, pkcs8_der: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let parts = ec_private_parts(pkcs8_der)?;
        keyserver_core::plugin::check_point_form(parts.curve, peer_point)?;
        let private = ec_private_key(&parts)?;
        let group = ec_group(parts.curve)?;
        let not_on_curve = || invalid("the EC public key is not a point of its curve");
        let mut ctx = BigNumContext::new().map_err(|_| crypto("ECDH"))?;
        // oct2point refuses points off the curve; check_key also refuses
        // the identity and points outside the prime-order group.
        let point =
            EcPoint::from_bytes(&group, peer_point, &mut ctx).map_err(|_| not_on_curve())?;
        let peer = EcKey::from_public_key(&group, &point).map_err(|_| not_on_curve())?;
        peer.check_key().map_err(|_| not_on_curve())?;
        let peer = PKey::from_ec_key(peer).map_err(|_| crypto("ECDH"))?;
        let private = PKey::from_ec_key(private).map_err(|_| crypto("ECDH"))?;
        let mut deriver = Deriver::new(&private).map_err(|_| crypto("ECDH"))?;
        deriver.set_peer(&peer).map_err(|_| not_on_curve())?;
        deriver
            .derive_to_vec()
            .map(Zeroizing::new)
            .map_err(|_| crypto("ECDH"))
    }

    fn ec_public_key(&self, curve: Curve, scalar: &[u8]) -> Result<Vec<u8>> {
        if scalar.len() != curve.field_len() {
            return Err(invalid("the EC private scalar has the wrong length"));
        }
        let group = ec_group(curve)?;
        let fail = |_| crypto("EC public key");
        let mut ctx = BigNumContext::new().map_err(fail)?;
        let mut order = BigNum::new().map_err(fail)?;
        group.order(&mut order, &mut ctx).map_err(fail)?;
        let scalar = SecretBn::from_slice(scalar).map_err(fail)?;
        if scalar.0.num_bits() == 0 || scalar.0 >= order {
            return Err(invalid("EC private scalar out of range"));
        }
        let mut point = EcPoint::new(&group).map_err(fail)?;
        point
            .mul_generator2(&group, &scalar.0, &mut ctx)
            .map_err(fail)?;
        point
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .map_err(fail)
    }
}

/// RSA and EC KEKs; no hybrid ones: OpenSSL has ML-KEM from 3.5 on, and
/// this suite does not use it yet (it is untested here, where the system's
/// OpenSSL is 3.0), so `hybrid()` is `None` and a hybrid request is a
/// policy error naming this suite. The hybrid KEKs need the RustCrypto or
/// AWS-LC suite.
impl CipherSuite for OpenSsl {
    fn name(&self) -> &'static str {
        NAME
    }

    fn ec(&self) -> Option<&dyn EcKek> {
        Some(self)
    }
}

/// A secret big number: in OpenSSL's secure heap when it has one, and
/// wiped (`BN_clear`) before it is freed, which `BN_free` does not do.
struct SecretBn(BigNum);

impl SecretBn {
    fn from_slice(bytes: &[u8]) -> std::result::Result<Self, ErrorStack> {
        let mut n = BigNum::new_secure()?;
        n.copy_from_slice(bytes)?;
        Ok(SecretBn(n))
    }
}

impl Drop for SecretBn {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// The OpenSSL group of a curve.
fn ec_group(curve: Curve) -> Result<EcGroup> {
    let nid = match curve {
        Curve::P256 => Nid::X9_62_PRIME256V1,
        Curve::P384 => Nid::SECP384R1,
        Curve::P521 => Nid::SECP521R1,
        _ => return Err(keyserver_core::plugin::unsupported(NAME, "this curve")),
    };
    EcGroup::from_curve_name(nid).map_err(|_| crypto("EC group"))
}

/// The EC private key of `parts`, checked: the scalar in 1..order and the
/// public point its multiple of the generator.
fn ec_private_key(parts: &EcPrivateParts<'_>) -> Result<EcKey<Private>> {
    let mismatch = || invalid("the private key does not match its public key");
    let group = ec_group(parts.curve)?;
    let mut ctx = BigNumContext::new().map_err(|_| crypto("EC key"))?;
    let mut order = BigNum::new().map_err(|_| crypto("EC key"))?;
    group
        .order(&mut order, &mut ctx)
        .map_err(|_| crypto("EC key"))?;
    let scalar = SecretBn::from_slice(parts.scalar).map_err(|_| mismatch())?;
    if scalar.0.num_bits() == 0 || scalar.0 >= order {
        return Err(invalid("EC private scalar out of range"));
    }
    let point = EcPoint::from_bytes(&group, parts.point, &mut ctx).map_err(|_| mismatch())?;
    // The key's own copy is wiped by EC_KEY_free (BN_clear_free).
    let key = EcKey::from_private_components(&group, &scalar.0, &point).map_err(|_| mismatch())?;
    key.check_key().map_err(|_| mismatch())?;
    Ok(key)
}

/// An HKDF context of `hash` in `mode`, ready for its inputs.
fn hkdf_ctx(hash: HkdfHash, mode: HkdfMode) -> Result<PkeyCtx<()>> {
    let md = match hash {
        HkdfHash::Sha256 => Md::sha256(),
        HkdfHash::Sha384 => Md::sha384(),
        HkdfHash::Sha512 => Md::sha512(),
        _ => return Err(keyserver_core::plugin::unsupported(NAME, "this HKDF hash")),
    };
    let fail = |_| crypto("HKDF");
    let mut ctx = PkeyCtx::new_id(Id::HKDF).map_err(fail)?;
    ctx.derive_init().map_err(fail)?;
    ctx.set_hkdf_md(md).map_err(fail)?;
    ctx.set_hkdf_mode(mode).map_err(fail)?;
    Ok(ctx)
}

/// HKDF-SHA256 through OpenSSL 3's `EVP_KDF` interface, the one place in the
/// crate with `unsafe` code.
///
/// Why not the safe wrappers: `PkeyCtx` with `Id::HKDF` goes through
/// OpenSSL's legacy `EVP_PKEY` bridge, which fetches the KDF and the digest
/// again for every context (name lookups under locks): a call cost more than
/// sealing 16 KiB (BENCHMARKS.md, `openssl/primitives/hkdf-sha256-16`).
/// `openssl::kdf::hkdf` copies the key into an `OSSL_PARAM` array that
/// OpenSSL frees without wiping, leaving a copy of the DEK in freed memory.
/// Here the KDF is fetched once per process and the parameters point at the
/// caller's buffers: OpenSSL keeps its own copies inside the context and
/// wipes them when the context is freed. What remains is inside
/// OpenSSL 3.0's HKDF, whose one-shot `HMAC()` looks HMAC and the digest up
/// by name on every call; reusing a context per thread did not help, and
/// OpenSSL 3.0 cannot duplicate HKDF contexts (BENCHMARKS.md).
#[allow(unsafe_code)]
mod kdf;
