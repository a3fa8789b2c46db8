//! Key wrapping, one capability per KEK algorithm: [`RsaKek`] (every suite),
//! [`EcKek`] and [`HybridKek`] (a suite offers them through
//! [`CipherSuite::ec`](super::CipherSuite::ec) and
//! [`CipherSuite::hybrid`](super::CipherSuite::hybrid)).
//!
//! The core composes these primitives into the KEK formats (RSA-OAEP,
//! RFC 9180 HPKE, the X-Wing-style hybrid); a suite never sees a format.

use zeroize::Zeroizing;

use crate::{Curve, Result};

/// RSA KEKs: key generation, the key-pair check, and RSA-OAEP with
/// SHA-256 (MGF1-SHA-256, empty label). Every suite has them: RSA-3072 is
/// the default KEK.
///
/// # Errors
/// [`Error::InvalidKey`](crate::Error::InvalidKey) for a key it cannot use,
/// [`Error::DecryptionFailed`](crate::Error::DecryptionFailed) when an
/// unwrap fails, [`Error::Crypto`](crate::Error::Crypto) when the primitive
/// itself fails. Errors never contain key material.
pub trait RsaKek: Send + Sync {
    /// Generates an RSA key pair with a modulus of `bits` bits and public
    /// exponent 65537, returned as unencrypted PKCS#8 DER.
    fn generate_rsa(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>>;

    /// Encrypts `dek` with RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) under
    /// the public key `spki_der` (DER SubjectPublicKeyInfo).
    fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>>;

    /// Checks that the private key `pkcs8_der` (unencrypted PKCS#8, RSA) is
    /// one consistent key pair: its private fields belong to its public key
    /// (the primes multiply to the modulus; the private exponent inverts the
    /// public one; the CRT values follow from them). The core calls this
    /// before it uses a KEK, so a key forged from a public key with made-up
    /// private fields is refused, whichever suite runs.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) for an inconsistent or
    /// malformed key.
    fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()>;

    /// Decrypts an RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) ciphertext
    /// with the private key `pkcs8_der`.
    fn rsa_oaep_unwrap(&self, pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// EC KEKs (NIST P-256, P-384, P-521): key generation, the key-pair check,
/// ECDH, and the scalar-to-point map the hybrid KEK's key derivation needs.
/// The core builds RFC 9180 HPKE on them.
///
/// A suite that has them says so in [`CipherSuite::ec`](super::CipherSuite::ec);
/// one that does not simply leaves this trait out, and the core answers an
/// EC request with a policy error naming the suite.
///
/// # Errors
/// As [`RsaKek`]; a curve the library does not have ([`Curve`] may grow) is
/// a policy error.
pub trait EcKek: Send + Sync {
    /// Generates an EC key pair on `curve` from the OS CSPRNG, returned as
    /// unencrypted PKCS#8 DER that includes the public point (RFC 5915
    /// `publicKey`), as [`plugin::ec_private_parts`](crate::plugin::ec_private_parts)
    /// reads it.
    fn generate_ec(&self, curve: Curve) -> Result<Zeroizing<Vec<u8>>>;

    /// Checks that the EC private key `pkcs8_der` is one consistent key
    /// pair: its scalar is in range and its public point is the scalar
    /// times the generator. The core calls this before it uses an EC KEK.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) for an inconsistent
    /// or malformed key.
    fn ec_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()>;

    /// Elliptic-curve Diffie-Hellman (SP 800-56A, the x-coordinate of the
    /// shared point, [`Curve::field_len`] bytes) between the private key
    /// `pkcs8_der` and the uncompressed point `peer_point` of the same curve.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) if the point is not
    /// on the key's curve (or is the identity), or the key is malformed.
    fn ecdh(&self, pkcs8_der: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// The uncompressed public point of the private scalar `scalar`
    /// (big-endian, [`Curve::field_len`] bytes) on `curve`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) unless
    /// 0 < `scalar` < the group order (rejection sampling relies on it).
    fn ec_public_key(&self, curve: Curve, scalar: &[u8]) -> Result<Vec<u8>>;
}

/// An ML-KEM parameter set (FIPS 203).
///
/// ```
/// assert_eq!(keyserver::MlKem::MlKem1024.ciphertext_len(), 1568);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MlKem {
    /// ML-KEM-768 (security category 3).
    MlKem768,
    /// ML-KEM-1024 (security category 5).
    MlKem1024,
}

impl MlKem {
    /// Bytes of an encapsulation key: 1184 or 1568.
    pub const fn encapsulation_key_len(self) -> usize {
        match self {
            MlKem::MlKem768 => 1184,
            MlKem::MlKem1024 => 1568,
        }
    }

    /// Bytes of a ciphertext: 1088 or 1568.
    pub const fn ciphertext_len(self) -> usize {
        match self {
            MlKem::MlKem768 => 1088,
            MlKem::MlKem1024 => 1568,
        }
    }
}

/// The post-quantum half of the hybrid KEKs: ML-KEM (FIPS 203, from seeds,
/// with the caller's randomness) and the SHA-3 functions (FIPS 202) of the
/// hybrid combiner. The classical half is [`EcKek`], so a suite that offers
/// hybrid KEKs offers EC KEKs too.
///
/// A suite that has them says so in
/// [`CipherSuite::hybrid`](super::CipherSuite::hybrid).
///
/// # Errors
/// As [`RsaKek`]; a parameter set the library does not have ([`MlKem`] may
/// grow) is a policy error.
pub trait HybridKek: Send + Sync {
    /// ML-KEM.KeyGen_internal (FIPS 203 Algorithm 16) from the 64-byte seed
    /// `d || z`: the encapsulation key.
    fn ml_kem_keygen(&self, params: MlKem, seed: &[u8]) -> Result<Vec<u8>>;

    /// ML-KEM.Encaps_internal (FIPS 203 Algorithm 17) to the encapsulation
    /// key `ek` with the 32 random bytes `m` (the caller draws them from
    /// the OS CSPRNG; fixed ones only in known-answer tests): the
    /// ciphertext and the 32-byte shared key.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) for an encapsulation
    /// key that fails the FIPS 203 §7.2 checks.
    fn ml_kem_encaps(
        &self,
        params: MlKem,
        ek: &[u8],
        m: &[u8],
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)>;

    /// ML-KEM.Decaps (FIPS 203 Algorithm 18, with implicit rejection) of
    /// `ct` with the decapsulation key made from the 64-byte seed `d || z`:
    /// the 32-byte shared key.
    fn ml_kem_decaps(&self, params: MlKem, seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// SHA3-256 (FIPS 202).
    fn sha3_256(&self, data: &[u8]) -> Result<[u8; 32]>;

    /// SHAKE256 (FIPS 202): fills `out` from `data`.
    fn shake256(&self, data: &[u8], out: &mut [u8]) -> Result<()>;
}

impl<T: RsaKek + ?Sized> RsaKek for Box<T> {
    fn generate_rsa(&self, bits: usize) -> Result<Zeroizing<Vec<u8>>> {
        (**self).generate_rsa(bits)
    }
    fn rsa_oaep_wrap(&self, spki_der: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
        (**self).rsa_oaep_wrap(spki_der, dek)
    }
    fn rsa_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        (**self).rsa_check_key_pair(pkcs8_der)
    }
    fn rsa_oaep_unwrap(&self, pkcs8_der: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (**self).rsa_oaep_unwrap(pkcs8_der, wrapped)
    }
}
