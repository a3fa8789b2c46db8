//! The [`CipherSuite`] trait: the cryptographic primitives a backend supplies.

use zeroize::{Zeroize, Zeroizing};

use crate::{Curve, Error, Result};

/// Length of an AES-GCM nonce in bytes.
pub const GCM_NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag in bytes.
pub const GCM_TAG_LEN: usize = 16;
/// Longest plaintext one AES-GCM operation may take (SP 800-38D: 2^39 - 256
/// bits).
pub const GCM_MAX_PLAINTEXT: u64 = (1 << 36) - 32;

/// An AES-GCM key with its key schedule set up once, for many messages
/// under the same key: what [`CipherSuite::aes_gcm_prepare`] returns. Its
/// methods behave exactly as
/// [`CipherSuite::aes_gcm_seal_append`] and
/// [`CipherSuite::aes_gcm_open_append`] with the key it was made from, and
/// it wipes the key schedule when dropped.
///
/// It is shared between threads (an envelope v2 session seals from many at
/// once), so an implementation's methods take `&self` and keep no
/// per-message state in it.
pub trait GcmKey: Send + Sync {
    /// As [`CipherSuite::aes_gcm_seal_append`] with this key.
    ///
    /// # Errors
    /// As there.
    fn seal_append(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()>;

    /// As [`CipherSuite::aes_gcm_open_append`] with this key.
    ///
    /// # Errors
    /// As there.
    fn open_append(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; GCM_TAG_LEN],
        out: &mut Vec<u8>,
    ) -> Result<()>;
}

/// The hash function of an HKDF (RFC 5869) call.
///
/// ```
/// assert_eq!(keyserver::HkdfHash::Sha384.len(), 48);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HkdfHash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HkdfHash {
    /// The digest (and pseudorandom key) length in bytes: 32, 48 or 64.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(self) -> usize {
        match self {
            HkdfHash::Sha256 => 32,
            HkdfHash::Sha384 => 48,
            HkdfHash::Sha512 => 64,
        }
    }
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

/// The error of a primitive a suite does not offer: a typed policy error
/// naming the suite, never a panic.
pub fn unsupported(suite: &str, what: &str) -> Error {
    Error::policy(format!("the {suite} cipher suite does not offer {what}"))
}

/// Makes room for `additional` more bytes in `out` without leaving a copy
/// of what it holds behind: a `Vec` that grows moves into a new block and
/// frees the old one as it is, so when `out` is too small its bytes move
/// into a new block here and the old block is wiped first. What a suite's
/// `aes_gcm_*_append` writes into must be reserved this way.
///
/// ```
/// let mut out = b"secret".to_vec();
/// keyserver::plugin::reserve_wiped(&mut out, 1 << 20);
/// assert_eq!(out, b"secret");
/// assert!(out.capacity() >= 6 + (1 << 20));
/// ```
pub fn reserve_wiped(out: &mut Vec<u8>, additional: usize) {
    let needed = out.len().saturating_add(additional);
    if out.capacity() >= needed {
        return;
    }
    let mut bigger = Vec::with_capacity(needed);
    bigger.extend_from_slice(out);
    out.zeroize();
    *out = bigger;
}

/// The cryptographic primitives keyserver needs, and nothing more.
///
/// A suite supplies primitives only; the core owns every format (KEK parsing
/// and [`KeyId`](crate::KeyId), the stored record, the ciphertext envelope). So
/// two suites cannot drift apart: given the same inputs they must produce the
/// same bytes, which the conformance tests check.
///
/// The trait is synchronous (crypto is CPU-bound; the server moves the slow
/// RSA operations off the async runtime) and dyn-compatible.
///
/// Why there is no `public_key_der` primitive: the public half of a KEK is
/// derived from the PKCS#8 structure by the core ([`Kek::public_key_der`]),
/// so the KeyId is defined in exactly one place and no suite can make a
/// different one.
///
/// Implementations: `RustCrypto` (feature `cipher-rustcrypto`) and `OpenSsl`
/// (feature `cipher-openssl`).
///
/// [`Kek::public_key_der`]: crate::Kek::public_key_der
///
/// # Errors
///
/// Every method returns [`Error::InvalidKey`](crate::Error::InvalidKey) for a
/// key it cannot use, [`Error::DecryptionFailed`](crate::Error::DecryptionFailed)
/// when an unwrap or open fails authentication, and
/// [`Error::Crypto`](crate::Error::Crypto) when the primitive itself fails.
/// Errors never contain key material.
///
/// # Example
///
/// ```
/// # {
/// use keyserver::CipherSuite;
/// use keyserver::backends::RustCrypto;
///
/// let suite = RustCrypto::new();
/// let key = [0u8; 16];
/// let sealed = suite.aes_gcm_seal(&key, &[0; 12], b"aad", b"hello")?;
/// assert_eq!(sealed.len(), 5 + 16);
/// let opened = suite.aes_gcm_open(&key, &[0; 12], b"aad", &sealed)?;
/// assert_eq!(&opened[..], b"hello");
///
/// // In place: no allocation, the tag comes back separately.
/// let mut buf = *b"hello";
/// let tag = suite.aes_gcm_seal_in_place(&key, &[0; 12], b"aad", &mut buf)?;
/// assert_eq!((&buf[..], &tag[..]), sealed.split_at(5));
/// suite.aes_gcm_open_in_place(&key, &[0; 12], b"aad", &mut buf, &tag)?;
/// assert_eq!(&buf, b"hello");
/// # }
/// # Ok::<(), keyserver::Error>(())
/// ```
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait CipherSuite: Send + Sync + 'static {
    /// A short stable name, such as `"rustcrypto"`.
    fn name(&self) -> &'static str;

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

    /// HKDF-SHA256 (RFC 5869): extract with `salt` from `ikm`, expand with
    /// `info` into `okm` (at most 255 * 32 bytes).
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()>;

    /// AES-GCM encryption in place with a 16, 24 or 32-byte `key`: `buf`
    /// holds the plaintext on entry and the ciphertext on return; the
    /// 16-byte tag is returned.
    ///
    /// This is the primitive the envelope and stream formats use: the caller
    /// owns the buffer, so sealing costs no allocation and no extra copy.
    fn aes_gcm_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN]>;

    /// AES-GCM decryption in place: `buf` holds the ciphertext on entry and
    /// the plaintext on a successful return. On any failure (a wrong key,
    /// nonce, `aad` or `tag`, or a changed byte) the result is
    /// [`Error::DecryptionFailed`](crate::Error::DecryptionFailed) and `buf`
    /// is zeroed, so unauthenticated plaintext never reaches the caller.
    fn aes_gcm_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()>;

    /// AES-GCM encryption of `plaintext`, appended to `out` (after what it
    /// holds) followed by the 16-byte tag. On failure `out` is as it was.
    /// If `out` must grow, its old block is wiped first (see
    /// [`reserve_wiped`]).
    ///
    /// Provided on top of
    /// [`aes_gcm_seal_in_place`](CipherSuite::aes_gcm_seal_in_place) (a copy,
    /// then sealed in place); a suite that can encrypt from one buffer into
    /// another overrides it to save the copy (the envelope uses it).
    fn aes_gcm_seal_append(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        reserve_wiped(out, plaintext.len() + GCM_TAG_LEN);
        out.extend_from_slice(plaintext);
        match self.aes_gcm_seal_in_place(key, nonce, aad, &mut out[start..]) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(e) => {
                // The copy of the plaintext does not stay behind.
                out[start..].zeroize();
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// AES-GCM decryption of `ciphertext` with `tag`, the plaintext
    /// appended to `out` (after what it holds). A failure to authenticate
    /// (a wrong key, nonce, `aad` or `tag`, or a changed byte) is
    /// [`Error::DecryptionFailed`](crate::Error::DecryptionFailed), a key
    /// of the wrong length [`Error::InvalidKey`](crate::Error::InvalidKey);
    /// either way `out` is as it was, with nothing unauthenticated left in
    /// its memory. If `out` must grow, its old block is wiped first (see
    /// [`reserve_wiped`]).
    ///
    /// Provided on top of
    /// [`aes_gcm_open_in_place`](CipherSuite::aes_gcm_open_in_place) (a copy,
    /// then opened in place); a suite that can decrypt from one buffer into
    /// another overrides it to save the copy (the envelope uses it).
    fn aes_gcm_open_append(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; GCM_TAG_LEN],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        reserve_wiped(out, ciphertext.len());
        out.extend_from_slice(ciphertext);
        let opened = self.aes_gcm_open_in_place(key, nonce, aad, &mut out[start..], tag);
        if opened.is_err() {
            // Zeroed by the suite already; gone from `out` too.
            out[start..].zeroize();
            out.truncate(start);
        }
        opened
    }

    /// An AES-GCM `key` (16, 24 or 32 bytes) with its key schedule set up
    /// once, for sealing and opening many messages under it: envelope v2
    /// keeps one per session ([`crate::envelope::Session`]), so a message
    /// costs no key set-up.
    ///
    /// `None` (the default) means the suite has no such form: callers then
    /// pass the key bytes to
    /// [`aes_gcm_seal_append`](CipherSuite::aes_gcm_seal_append) for every
    /// message, which gives the same bytes.
    ///
    /// # Errors
    /// A suite that prepares keys: [`Error::InvalidKey`](crate::Error::InvalidKey)
    /// for a key of another length. (The default prepares nothing and
    /// fails nothing: the length is checked at each message instead.)
    fn aes_gcm_prepare(&self, key: &[u8]) -> Result<Option<Box<dyn GcmKey>>> {
        let _ = key;
        Ok(None)
    }

    /// AES-GCM encryption into a new buffer: returns the ciphertext followed
    /// by the 16-byte tag. Provided on top of
    /// [`aes_gcm_seal_in_place`](CipherSuite::aes_gcm_seal_in_place).
    fn aes_gcm_seal(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + GCM_TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.aes_gcm_seal_in_place(key, nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// AES-GCM decryption of ciphertext-then-tag into a new buffer; any
    /// tampering is [`Error::DecryptionFailed`](crate::Error::DecryptionFailed).
    /// Provided on top of
    /// [`aes_gcm_open_in_place`](CipherSuite::aes_gcm_open_in_place).
    fn aes_gcm_open(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let body_len = sealed
            .len()
            .checked_sub(GCM_TAG_LEN)
            .ok_or(crate::Error::DecryptionFailed)?;
        let (body, tag) = sealed.split_at(body_len);
        let mut tag_bytes = [0u8; GCM_TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let mut out = Zeroizing::new(body.to_vec());
        self.aes_gcm_open_in_place(key, nonce, aad, &mut out, &tag_bytes)?;
        Ok(out)
    }

    /// Fills `buf` from the operating system's CSPRNG.
    fn fill_random(&self, buf: &mut [u8]) -> Result<()>;

    /// Generates an EC key pair on `curve` from the OS CSPRNG, returned as
    /// unencrypted PKCS#8 DER that includes the public point (RFC 5915
    /// `publicKey`), as [`plugin::ec_private_parts`](crate::plugin::ec_private_parts)
    /// reads it.
    ///
    /// The default says the suite does not offer EC keys (a policy error),
    /// so suites written before EC keys existed keep compiling.
    fn generate_ec(&self, curve: Curve) -> Result<Zeroizing<Vec<u8>>> {
        let _ = curve;
        Err(unsupported(self.name(), "EC keys"))
    }

    /// Checks that the EC private key `pkcs8_der` is one consistent key
    /// pair: its scalar is in range and its public point is the scalar
    /// times the generator. The core calls this before it uses an EC KEK.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) for an inconsistent
    /// or malformed key.
    fn ec_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        let _ = pkcs8_der;
        Err(unsupported(self.name(), "EC keys"))
    }

    /// Elliptic-curve Diffie-Hellman (SP 800-56A, the x-coordinate of the
    /// shared point, [`Curve::field_len`] bytes) between the private key
    /// `pkcs8_der` and the uncompressed point `peer_point` of the same curve.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) if the point is not
    /// on the key's curve (or is the identity), or the key is malformed.
    fn ecdh(&self, pkcs8_der: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let _ = (pkcs8_der, peer_point);
        Err(unsupported(self.name(), "EC keys"))
    }

    /// HKDF-Extract (RFC 5869 §2.2) with `hash`: the pseudorandom key of
    /// `ikm` under `salt` (an empty salt is `hash.len()` zero bytes).
    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let _ = (hash, salt, ikm);
        Err(unsupported(self.name(), "HKDF-Extract"))
    }

    /// HKDF-Expand (RFC 5869 §2.3) with `hash`: fills `okm` (at most 255
    /// times `hash.len()` bytes) from the pseudorandom key `prk` and `info`.
    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        let _ = (hash, prk, info, okm);
        Err(unsupported(self.name(), "HKDF-Expand"))
    }

    /// The uncompressed public point of the private scalar `scalar`
    /// (big-endian, [`Curve::field_len`] bytes) on `curve`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) unless
    /// 0 < `scalar` < the group order (rejection sampling relies on it).
    fn ec_public_key(&self, curve: Curve, scalar: &[u8]) -> Result<Vec<u8>> {
        let _ = (curve, scalar);
        Err(unsupported(self.name(), "EC keys"))
    }

    /// ML-KEM.KeyGen_internal (FIPS 203 Algorithm 16) from the 64-byte seed
    /// `d || z`: the encapsulation key.
    fn ml_kem_keygen(&self, params: MlKem, seed: &[u8]) -> Result<Vec<u8>> {
        let _ = (params, seed);
        Err(unsupported(self.name(), "ML-KEM"))
    }

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
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        let _ = (params, ek, m);
        Err(unsupported(self.name(), "ML-KEM"))
    }

    /// ML-KEM.Decaps (FIPS 203 Algorithm 18, with implicit rejection) of
    /// `ct` with the decapsulation key made from the 64-byte seed `d || z`:
    /// the 32-byte shared key.
    fn ml_kem_decaps(&self, params: MlKem, seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let _ = (params, seed, ct);
        Err(unsupported(self.name(), "ML-KEM"))
    }

    /// SHA3-256 (FIPS 202).
    fn sha3_256(&self, data: &[u8]) -> Result<[u8; 32]> {
        let _ = data;
        Err(unsupported(self.name(), "SHA-3"))
    }

    /// SHAKE256 (FIPS 202): fills `out` from `data`.
    fn shake256(&self, data: &[u8], out: &mut [u8]) -> Result<()> {
        let _ = (data, out);
        Err(unsupported(self.name(), "SHA-3"))
    }

    /// Whether this suite runs on a FIPS 140-3 validated cryptographic
    /// module in FIPS mode, as the module itself reports it (`status` says
    /// so, and `serve --require-fips` insists on it). It does not claim
    /// that every operation is one of the module's approved services
    /// (SECURITY.md says which are not). The default is `false`: only a
    /// suite that can prove it says `true`.
    fn fips_validated(&self) -> bool {
        false
    }
}

/// A boxed suite is a suite: choose the cipher suite at run time (the
/// `keyserver` command does) and still use the generic APIs.
impl<T: CipherSuite + ?Sized> CipherSuite for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
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
    fn hkdf_sha256(&self, ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        (**self).hkdf_sha256(ikm, salt, info, okm)
    }
    fn aes_gcm_seal_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN]> {
        (**self).aes_gcm_seal_in_place(key, nonce, aad, buf)
    }
    fn aes_gcm_open_in_place(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<()> {
        (**self).aes_gcm_open_in_place(key, nonce, aad, buf, tag)
    }
    fn aes_gcm_seal_append(
        &self,
        key: &[u8],
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        (**self).aes_gcm_seal_append(key, nonce, aad, plaintext, out)
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
        (**self).aes_gcm_open_append(key, nonce, aad, ciphertext, tag, out)
    }
    fn aes_gcm_prepare(&self, key: &[u8]) -> Result<Option<Box<dyn GcmKey>>> {
        (**self).aes_gcm_prepare(key)
    }
    fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        (**self).fill_random(buf)
    }
    fn generate_ec(&self, curve: Curve) -> Result<Zeroizing<Vec<u8>>> {
        (**self).generate_ec(curve)
    }
    fn ec_check_key_pair(&self, pkcs8_der: &[u8]) -> Result<()> {
        (**self).ec_check_key_pair(pkcs8_der)
    }
    fn ecdh(&self, pkcs8_der: &[u8], peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (**self).ecdh(pkcs8_der, peer_point)
    }
    fn hkdf_extract(&self, hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (**self).hkdf_extract(hash, salt, ikm)
    }
    fn hkdf_expand(&self, hash: HkdfHash, prk: &[u8], info: &[u8], okm: &mut [u8]) -> Result<()> {
        (**self).hkdf_expand(hash, prk, info, okm)
    }
    fn ec_public_key(&self, curve: Curve, scalar: &[u8]) -> Result<Vec<u8>> {
        (**self).ec_public_key(curve, scalar)
    }
    fn ml_kem_keygen(&self, params: MlKem, seed: &[u8]) -> Result<Vec<u8>> {
        (**self).ml_kem_keygen(params, seed)
    }
    fn ml_kem_encaps(
        &self,
        params: MlKem,
        ek: &[u8],
        m: &[u8],
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        (**self).ml_kem_encaps(params, ek, m)
    }
    fn ml_kem_decaps(&self, params: MlKem, seed: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        (**self).ml_kem_decaps(params, seed, ct)
    }
    fn sha3_256(&self, data: &[u8]) -> Result<[u8; 32]> {
        (**self).sha3_256(data)
    }
    fn shake256(&self, data: &[u8], out: &mut [u8]) -> Result<()> {
        (**self).shake256(data, out)
    }
    fn fips_validated(&self) -> bool {
        (**self).fips_validated()
    }
}
