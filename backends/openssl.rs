//! The `OpenSsl` cipher suite: the system OpenSSL 3 through the `openssl` crate.

use der::Decode;
use openssl::bn::BigNum;
use openssl::encrypt::{Decrypter, Encrypter};
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use pkcs8::PrivateKeyInfoRef;
use zeroize::Zeroizing;

use crate::{CipherSuite, Error, Result, GCM_NONCE_LEN, GCM_TAG_LEN, MAX_RSA_BITS, MIN_RSA_BITS};

const NAME: &str = "openssl";

/// The cipher suite built on the system's OpenSSL (3.x) through the `openssl`
/// crate: RSA key generation, RSA-OAEP with SHA-256 as both the OAEP digest
/// and the MGF1 digest (set explicitly: OpenSSL's MGF1 default is SHA-1),
/// HKDF-SHA256 and AES-GCM. Salts, nonces and DEKs come from the OS CSPRNG
/// (`getrandom`), as with the RustCrypto suite.
///
/// It produces byte-identical envelopes and records to
/// [`RustCrypto`](super::RustCrypto), and keys made by either are used by the
/// other: a deployment can switch suites without losing a key or a ciphertext.
///
/// Feature `cipher-openssl`.
///
/// # Example
///
/// ```
/// use keyserver::{CipherSuite, Kek};
/// use keyserver::backends::OpenSsl;
///
/// let suite = OpenSsl::new();
/// let kek = Kek::from_pkcs8_der(&suite.generate_rsa(2048)?)?;
/// let wrapped = suite.rsa_oaep_wrap(kek.public_key_der(), &[42; 16])?;
/// assert_eq!(&suite.rsa_oaep_unwrap(kek.pkcs8_der(), &wrapped)?[..], &[42; 16]);
/// # Ok::<(), keyserver::Error>(())
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
    Error::InvalidKey { reason }
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

/// Loads an RSA SubjectPublicKeyInfo from its components (see [`private_key`]).
fn public_key(spki_der: &[u8]) -> Result<PKey<Public>> {
    let (n, e) = crate::rsa_public_parts(spki_der)?;
    let number = |b: &[u8]| BigNum::from_slice(b).map_err(|_| invalid("malformed RSA public key"));
    let rsa = Rsa::from_public_components(number(n)?, number(e)?)
        .map_err(|_| invalid("not a valid RSA public key"))?;
    check_rsa_bits(rsa.size() * 8)?;
    PKey::from_rsa(rsa).map_err(|_| invalid("not a valid RSA public key"))
}

fn gcm_cipher(key: &[u8]) -> Result<Cipher> {
    match key.len() {
        16 => Ok(Cipher::aes_128_gcm()),
        24 => Ok(Cipher::aes_192_gcm()),
        32 => Ok(Cipher::aes_256_gcm()),
        _ => Err(invalid("wrong AES key length")),
    }
}

impl CipherSuite for OpenSsl {
    fn name(&self) -> &'static str {
        NAME
    }

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

    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        if okm.len() > 255 * 32 {
            return Err(crypto("HKDF output too long"));
        }
        let fail = |_| crypto("HKDF-SHA256");
        let mut ctx = PkeyCtx::new_id(Id::HKDF).map_err(fail)?;
        ctx.derive_init().map_err(fail)?;
        ctx.set_hkdf_md(Md::sha256()).map_err(fail)?;
        ctx.set_hkdf_key(ikm).map_err(fail)?;
        ctx.set_hkdf_salt(salt).map_err(fail)?;
        ctx.add_hkdf_info(info).map_err(fail)?;
        let n = ctx.derive(Some(okm)).map_err(fail)?;
        if n != okm.len() {
            return Err(crypto("HKDF-SHA256"));
        }
        Ok(())
    }

    fn aes_gcm_seal(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let cipher = gcm_cipher(key)?;
        let mut tag = [0u8; GCM_TAG_LEN];
        let mut out = encrypt_aead(cipher, key, Some(nonce), aad, plaintext, &mut tag)
            .map_err(|_| crypto("AES-GCM encryption"))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn aes_gcm_open(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let cipher = gcm_cipher(key)?;
        if sealed.len() < GCM_TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let (ciphertext, tag) = sealed.split_at(sealed.len() - GCM_TAG_LEN);
        decrypt_aead(cipher, key, Some(nonce), aad, ciphertext, tag)
            .map(Zeroizing::new)
            .map_err(|_| Error::DecryptionFailed)
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|_| crypto("random number generator"))
    }
}
