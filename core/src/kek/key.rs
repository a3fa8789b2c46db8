//! Key types: [`KeyId`], [`Strength`], [`Kek`], [`Dek`] and [`Plaintext`].
//!
//! These are concrete data types, independent of any cipher suite: a KEK made
//! by one suite is used by the other, and its [`KeyId`] is defined here, once.

use std::fmt;
use std::str::FromStr;

use der::asn1::BitStringRef;
use der::{Decode, Encode};
use pkcs1::{RsaPrivateKeyRef, RsaPublicKey};
use pkcs8::PrivateKeyInfoRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoRef;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ec::{ec_private_parts, ec_spki_der, Curve, EC_PUBLIC_KEY_OID};
use crate::{Error, Result};

/// Smallest RSA modulus ever accepted (SP 800-131A: 2048 bits, 112-bit strength).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, to bound the work an input can cause.
pub const MAX_RSA_BITS: usize = 16384;

/// The public identifier of a KEK: lowercase hex of the SHA-256 of the KEK's
/// public key as DER SubjectPublicKeyInfo.
///
/// It is what storage is keyed by, and the only thing about a key that logs and
/// errors may show. Anyone can compute it from a KEK file:
/// `openssl pkey -in kek.pem -pubout -outform DER | sha256sum`.
///
/// # Example
///
/// ```
/// use keyserver::KeyId;
///
/// let id: KeyId = "00".repeat(32).parse()?;
/// assert_eq!(id.to_string(), "00".repeat(32));
/// assert!("0".parse::<KeyId>().is_err());
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// Length of a key id in bytes.
    pub const LEN: usize = 32;

    /// The key id of a public key given as DER SubjectPublicKeyInfo.
    ///
    /// ```
    /// let id = keyserver::KeyId::from_spki_der(b"any bytes");
    /// assert_eq!(id.to_string().len(), 64);
    /// ```
    pub fn from_spki_der(spki_der: &[u8]) -> Self {
        KeyId(Sha256::digest(spki_der).into())
    }

    /// A key id from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyId(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // ok: the buffer is exactly twice the input length.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;

    /// Parses 64 lowercase hex digits, the one form a key id is written
    /// in (so that one key has one spelling in logs, file names and URLs).
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidKey {
            reason: "a key id is 64 lowercase hex digits".into(),
        };
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| invalid())?;
        Ok(KeyId(out))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Strength {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u16(self.bits())
    }
}

impl<'de> Deserialize<'de> for Strength {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bits = u32::deserialize(d)?;
        Strength::from_bits(bits).map_err(serde::de::Error::custom)
    }
}

/// A security strength in bits (NIST SP 800-57 Part 1, Table 2), with the RSA
/// KEK size and AES-GCM DEK size that provide it.
///
/// | strength | KEK | DEK |
/// | --- | --- | --- |
/// | 128 (default) | RSA-3072 | AES-128-GCM |
/// | 192 | RSA-7680 | AES-192-GCM |
/// | 256 | RSA-15360 | AES-256-GCM |
///
/// ```
/// use keyserver::Strength;
///
/// assert_eq!(Strength::default(), Strength::S128);
/// assert_eq!(Strength::S192.rsa_bits(), 7680);
/// assert_eq!(Strength::S256.aes_key_len(), 32);
/// assert_eq!("192".parse::<Strength>()?, Strength::S192);
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Strength {
    /// 128-bit security: RSA-3072 wrapping AES-128-GCM.
    #[default]
    S128,
    /// 192-bit security: RSA-7680 wrapping AES-192-GCM.
    S192,
    /// 256-bit security: RSA-15360 wrapping AES-256-GCM.
    S256,
}

impl Strength {
    /// All strengths, weakest first.
    pub const ALL: [Strength; 3] = [Strength::S128, Strength::S192, Strength::S256];

    /// The strength in bits: 128, 192 or 256.
    pub const fn bits(self) -> u16 {
        match self {
            Strength::S128 => 128,
            Strength::S192 => 192,
            Strength::S256 => 256,
        }
    }

    /// The strength for a number of bits, if it is one of 128, 192, 256.
    pub fn from_bits(bits: u32) -> Result<Self> {
        match bits {
            128 => Ok(Strength::S128),
            192 => Ok(Strength::S192),
            256 => Ok(Strength::S256),
            _ => Err(Error::policy(format!(
                "strength {bits} is not one of 128, 192, 256"
            ))),
        }
    }

    /// RSA modulus size (bits) of a KEK of this strength.
    pub const fn rsa_bits(self) -> usize {
        match self {
            Strength::S128 => 3072,
            Strength::S192 => 7680,
            Strength::S256 => 15360,
        }
    }

    /// AES key length (bytes) of a DEK of this strength.
    pub const fn aes_key_len(self) -> usize {
        match self {
            Strength::S128 => 16,
            Strength::S192 => 24,
            Strength::S256 => 32,
        }
    }

    /// The strength of an AES key of `len` bytes.
    pub fn from_aes_key_len(len: usize) -> Result<Self> {
        match len {
            16 => Ok(Strength::S128),
            24 => Ok(Strength::S192),
            32 => Ok(Strength::S256),
            _ => Err(Error::InvalidKey {
                reason: "a data key is 16, 24 or 32 bytes".into(),
            }),
        }
    }

    /// The security strength (bits) an RSA modulus of `bits` provides
    /// (SP 800-57 Part 1 Table 2; 2048 gives 112).
    pub const fn of_rsa_bits(bits: usize) -> u16 {
        if bits >= 15360 {
            256
        } else if bits >= 7680 {
            192
        } else if bits >= 3072 {
            128
        } else if bits >= 2048 {
            112
        } else {
            0
        }
    }
}

impl fmt::Display for Strength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bits())
    }
}

impl FromStr for Strength {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bits: u32 = s
            .trim()
            .parse()
            .map_err(|_| Error::policy("strength must be 128, 192 or 256"))?;
        Strength::from_bits(bits)
    }
}

/// The algorithm of a key-encryption key: how the DEK is wrapped under it.
///
/// | name | KEK | wrapping |
/// | --- | --- | --- |
/// | `rsa` (default) | RSA, 3072 / 7680 / 15360 bits by strength | RSA-OAEP-SHA256 |
/// | `ec` | P-256 / P-384 / P-521 by strength | HPKE (RFC 9180) base mode, DHKEM on the curve |
/// | `hybrid-pq` | MLKEM768-P256 (128), MLKEM1024-P384 (192, 256) | HPKE with the hybrid KEM of draft-ietf-hpke-pq |
///
/// Both give the strength they are asked for (SP 800-57 Part 1 Table 2);
/// an EC key of strength 256 takes milliseconds to make where RSA-15360
/// takes minutes.
///
/// ```
/// use keyserver::KekAlg;
///
/// assert_eq!("ec".parse::<KekAlg>()?, KekAlg::Ec);
/// assert_eq!(KekAlg::default().to_string(), "rsa");
/// assert_eq!("dsa".parse::<KekAlg>().unwrap_err().code(), 4);
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KekAlg {
    /// RSA with RSA-OAEP-SHA256 wrapping (the original key server's, and the default).
    #[default]
    Rsa,
    /// Elliptic curve (NIST P-curves) with HPKE wrapping.
    Ec,
    /// Hybrid post-quantum: ML-KEM with ECDH, with HPKE wrapping.
    HybridPq,
}

impl KekAlg {
    /// Every algorithm this build knows.
    pub const ALL: [KekAlg; 3] = [KekAlg::Rsa, KekAlg::Ec, KekAlg::HybridPq];

    /// Its name on the wire and the command line: `rsa` or `ec`.
    pub const fn name(self) -> &'static str {
        match self {
            KekAlg::Rsa => "rsa",
            KekAlg::Ec => "ec",
            KekAlg::HybridPq => "hybrid-pq",
        }
    }

    /// What a KEK of this algorithm at `strength` is, for people: `RSA-3072`,
    /// `P-384`.
    pub fn describe(self, strength: Strength) -> String {
        match self {
            KekAlg::Rsa => format!("RSA-{}", strength.rsa_bits()),
            KekAlg::Ec => Curve::for_strength(strength).to_string(),
            KekAlg::HybridPq => crate::HybridKem::for_strength(strength).to_string(),
        }
    }
}

impl fmt::Display for KekAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KekAlg {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "rsa" => Ok(KekAlg::Rsa),
            "ec" => Ok(KekAlg::Ec),
            "hybrid-pq" => Ok(KekAlg::HybridPq),
            _ => Err(Error::policy(
                "the KEK algorithm must be rsa, ec or hybrid-pq",
            )),
        }
    }
}

impl Serialize for KekAlg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for KekAlg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What kind of key a [`Kek`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KekKind {
    Rsa { bits: usize },
    Ec { curve: Curve },
    Hybrid { kem: crate::HybridKem },
}

/// A private key-encryption key: an RSA or EC private key, held as
/// unencrypted PKCS#8 DER in zeroizing memory.
///
/// The server hands a `Kek` out once, from `generate()`, and never stores it.
/// Whoever holds it can unwrap the data key stored under [`Kek::id`].
///
/// `Debug` shows only the key id and size; the key itself is wiped from
/// memory when the `Kek` is dropped.
///
/// # Example
///
/// ```
/// use keyserver::Kek;
///
/// // Not a PEM private key: a typed error that does not echo the input.
/// let err = Kek::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
///     .unwrap_err();
/// assert_eq!(err.code(), 2);
/// ```
#[derive(Clone)]
pub struct Kek {
    pkcs8_der: Zeroizing<Vec<u8>>,
    /// SHA-256 of the whole private key document (domain-separated): what
    /// only the holder of these exact bytes can present. The client's DEK
    /// cache is keyed by it, not by the public key id alone.
    fingerprint: Zeroizing<[u8; 32]>,
    spki_der: Vec<u8>,
    id: KeyId,
    kind: KekKind,
}

const PEM_LABEL: &str = "PRIVATE KEY";

impl Kek {
    /// Reads an unencrypted PKCS#8 PEM private key
    /// (`-----BEGIN PRIVATE KEY-----`): RSA, or EC on P-256, P-384 or P-521.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if it is not PEM, not PKCS#8, neither RSA nor
    /// EC, an RSA key of a size outside 2048..=16384 bits, or an EC key of
    /// another curve or without its public key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let (label, der) =
            pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|_| Error::InvalidKey {
                reason: "not a PEM document".into(),
            })?;
        let der = Zeroizing::new(der);
        if label == crate::hybrid::PEM_LABEL {
            return Self::from_hybrid_der(&der);
        }
        if label != PEM_LABEL {
            return Err(Error::InvalidKey {
                reason: "expected a PKCS#8 \"PRIVATE KEY\" PEM block".into(),
            });
        }
        Self::from_pkcs8_der(&der)
    }

    /// Reads an unencrypted PKCS#8 DER private key (RSA or EC).
    ///
    /// The structure is checked here (algorithm, curve, two primes, size);
    /// the mathematical consistency of the key is checked by the cipher
    /// suite when it loads the key.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] as for [`Kek::from_pem`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidKey {
            reason: reason.into(),
        };
        let info =
            PrivateKeyInfoRef::from_der(der).map_err(|_| invalid("not a PKCS#8 private key"))?;
        if info.algorithm.oid == EC_PUBLIC_KEY_OID {
            let parts = ec_private_parts(der)?;
            let spki_der = ec_spki_der(parts.curve, parts.point)?;
            return Ok(Self::new(der, spki_der, KekKind::Ec { curve: parts.curve }));
        }
        if info.algorithm.oid != pkcs1::ALGORITHM_OID {
            return Err(invalid("not an RSA or EC key"));
        }
        let rsa = RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
            .map_err(|_| invalid("malformed RSA private key"))?;
        if rsa.other_prime_infos.is_some() {
            return Err(invalid("multi-prime RSA keys are not supported"));
        }
        let modulus = rsa.modulus.as_bytes();
        let bits = match modulus.first() {
            Some(&b) if b != 0 => modulus.len() * 8 - b.leading_zeros() as usize,
            _ => return Err(invalid("malformed RSA modulus")),
        };
        if bits < MIN_RSA_BITS {
            return Err(invalid("RSA keys below 2048 bits are not accepted"));
        }
        if bits > MAX_RSA_BITS {
            return Err(invalid("RSA keys above 16384 bits are not accepted"));
        }
        // Bound the work a key can cause before any suite sees it: no
        // private field of a genuine key is longer than the modulus.
        let private_fields = [
            rsa.private_exponent,
            rsa.prime1,
            rsa.prime2,
            rsa.exponent1,
            rsa.exponent2,
            rsa.coefficient,
        ];
        if private_fields
            .iter()
            .any(|f| f.as_bytes().is_empty() || f.as_bytes().len() > modulus.len())
        {
            return Err(invalid("RSA private key fields do not fit its modulus"));
        }
        let public = RsaPublicKey {
            modulus: rsa.modulus,
            public_exponent: rsa.public_exponent,
        };
        let spki_der = rsa_spki_der(&public).map_err(|_| invalid("malformed RSA public key"))?;
        Ok(Self::new(der, spki_der, KekKind::Rsa { bits }))
    }

    /// Reads a hybrid post-quantum private key document (DER, the
    /// `HPKE PRIVATE KEY` of [`crate::hybrid`]).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if it is not one.
    pub fn from_hybrid_der(der: &[u8]) -> Result<Self> {
        let parts = crate::hybrid::hybrid_private_parts(der)?;
        let public = crate::hybrid::public_doc(parts.kem, parts.public_key)?;
        Ok(Self::new(der, public, KekKind::Hybrid { kem: parts.kem }))
    }

    /// Reads a private key document of any kind: PKCS#8 (RSA, EC) or the
    /// hybrid document.
    pub(crate) fn from_any_der(der: &[u8]) -> Result<Self> {
        match Self::from_pkcs8_der(der) {
            Err(e) if crate::hybrid::hybrid_private_parts(der).is_ok() => {
                drop(e);
                Self::from_hybrid_der(der)
            }
            other => other,
        }
    }

    fn new(der: &[u8], spki_der: Vec<u8>, kind: KekKind) -> Self {
        let mut fingerprint = Sha256::new();
        fingerprint.update(b"keyserver KEK fingerprint v1\0");
        fingerprint.update(der);
        Kek {
            pkcs8_der: Zeroizing::new(der.to_vec()),
            fingerprint: Zeroizing::new(fingerprint.finalize().into()),
            id: KeyId::from_spki_der(&spki_der),
            spki_der,
            kind,
        }
    }

    /// What kind of key this is.
    pub(crate) fn kind(&self) -> KekKind {
        self.kind
    }

    /// The fingerprint of the private key document (see the field).
    pub(crate) fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The key as unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), in
    /// memory that is wiped on drop; a hybrid key as
    /// `-----BEGIN HPKE PRIVATE KEY-----` ([`crate::hybrid`]).
    pub fn to_pem(&self) -> Zeroizing<String> {
        let label = match self.kind {
            KekKind::Hybrid { .. } => crate::hybrid::PEM_LABEL,
            _ => PEM_LABEL,
        };
        // Encoding a DER document we already parsed into base64 cannot fail
        // except on allocation; fall back to an empty string rather than panic.
        Zeroizing::new(
            pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, &self.pkcs8_der)
                .unwrap_or_default(),
        )
    }

    /// The key as unencrypted PKCS#8 DER (a hybrid key: its own DER
    /// document, [`crate::hybrid`]).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The public half as DER SubjectPublicKeyInfo (a hybrid key: the DER
    /// `HpkePublicKey` of [`crate::hybrid`]).
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key id (SHA-256 of [`Kek::public_key_der`]).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's size in bits: the RSA modulus (2048..=16384) or the EC
    /// curve's field (256, 384, 521).
    pub fn bits(&self) -> usize {
        match self.kind {
            KekKind::Rsa { bits } => bits,
            KekKind::Ec { curve } => curve.bits(),
            KekKind::Hybrid { kem } => kem.bits(),
        }
    }

    /// The key's algorithm.
    pub fn alg(&self) -> KekAlg {
        match self.kind {
            KekKind::Rsa { .. } => KekAlg::Rsa,
            KekKind::Ec { .. } => KekAlg::Ec,
            KekKind::Hybrid { .. } => KekAlg::HybridPq,
        }
    }

    /// The curve of an EC key (`None` for RSA).
    pub fn curve(&self) -> Option<Curve> {
        match self.kind {
            KekKind::Ec { curve } => Some(curve),
            KekKind::Rsa { .. } | KekKind::Hybrid { .. } => None,
        }
    }

    /// The hybrid KEM of a hybrid post-quantum key (`None` otherwise).
    pub fn hybrid_kem(&self) -> Option<crate::HybridKem> {
        match self.kind {
            KekKind::Hybrid { kem } => Some(kem),
            _ => None,
        }
    }

    /// The security strength of this key in bits (112, 128, 192 or 256).
    pub fn security_bits(&self) -> u16 {
        match self.kind {
            KekKind::Rsa { bits } => Strength::of_rsa_bits(bits),
            KekKind::Ec { curve } => curve.security_bits(),
            KekKind::Hybrid { kem } => kem.security_bits(),
        }
    }

    /// What the key is, for people and error messages: `2048-bit RSA`,
    /// `P-384`.
    pub(crate) fn describe(&self) -> String {
        match self.kind {
            KekKind::Rsa { bits } => format!("{bits}-bit RSA"),
            KekKind::Ec { curve } => format!("{curve} EC"),
            KekKind::Hybrid { kem } => format!("{kem} hybrid"),
        }
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("alg", &self.alg())
            .field("bits", &self.bits())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl PartialEq for Kek {
    fn eq(&self, other: &Self) -> bool {
        // Public data only: two KEKs with the same public key are the same key.
        self.spki_der == other.spki_der
    }
}

impl Eq for Kek {}

/// The modulus and the public exponent (big-endian, no leading zeros) of an
/// RSA public key given as DER SubjectPublicKeyInfo: the one SPKI parser the
/// cipher suites share.
///
/// # Errors
/// [`Error::InvalidKey`] if it is not an RSA SubjectPublicKeyInfo.
///
/// ```
/// # fn main() -> keyserver::Result<()> {
/// let pem = std::fs::read_to_string(
///     concat!(env!("CARGO_MANIFEST_DIR"), "/../testing/fixtures/kek-rsa2048.pem")).unwrap();
/// let kek = keyserver::Kek::from_pem(&pem)?;
/// let (n, e) = keyserver::plugin::rsa_public_parts(kek.public_key_der())?;
/// assert_eq!(n.len(), 256);
/// assert_eq!(e, [1, 0, 1]);
/// # Ok(()) }
/// ```
pub fn rsa_public_parts(spki_der: &[u8]) -> Result<(&[u8], &[u8])> {
    let invalid = |reason: &'static str| Error::InvalidKey {
        reason: reason.into(),
    };
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|_| invalid("not a DER SubjectPublicKeyInfo"))?;
    if spki.algorithm.oid != pkcs1::ALGORITHM_OID {
        return Err(invalid("not an RSA public key"));
    }
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or(invalid("malformed RSA public key"))
        .and_then(|bytes| {
            pkcs1::RsaPublicKeyRef::from_der(bytes).map_err(|_| invalid("malformed RSA public key"))
        })?;
    Ok((key.modulus.as_bytes(), key.public_exponent.as_bytes()))
}

/// DER SubjectPublicKeyInfo for an RSA public key (rsaEncryption, NULL
/// parameters), byte-identical to what OpenSSL writes with
/// `openssl pkey -pubout -outform DER`.
fn rsa_spki_der(public: &RsaPublicKey<der::asn1::UintRef<'_>>) -> der::Result<Vec<u8>> {
    let pkcs1_der = public.to_der()?;
    let spki = SubjectPublicKeyInfoRef {
        algorithm: pkcs1::ALGORITHM_ID,
        subject_public_key: BitStringRef::from_bytes(&pkcs1_der)?,
    };
    spki.to_der()
}

/// Refuses a KEK weaker than the DEK it protects or than the server's floor
/// (SP 800-57 Part 1 comparable strengths).
pub(crate) fn check_kek(kek: &Kek, dek: Strength, floor: Strength) -> Result<()> {
    check_pairing(kek, dek)?;
    if kek.security_bits() < floor.bits() {
        return Err(Error::policy(format!(
            "a {} key-encryption key gives {} bits of security, below this server's minimum of {floor}",
            kek.describe(),
            kek.security_bits()
        )));
    }
    Ok(())
}

/// Refuses a KEK wrapping a DEK of `dek` strength when the KEK is the
/// weaker of the two, whatever its algorithm.
pub(crate) fn check_pairing(kek: &Kek, dek: Strength) -> Result<()> {
    let kek_strength = kek.security_bits();
    if kek_strength < dek.bits() {
        return Err(Error::policy(format!(
            "a {} key ({kek_strength}-bit strength) may not wrap an AES-{} key ({dek}-bit strength)",
            kek.describe(),
            dek.aes_key_len() * 8
        )));
    }
    Ok(())
}

/// A data-encryption key: a random AES key of 16, 24 or 32 bytes, wiped from
/// memory on drop and redacted in `Debug`.
///
/// ```
/// use keyserver::{Dek, Strength};
///
/// let dek = Dek::from_bytes(&[7u8; 16])?;
/// assert_eq!(dek.strength(), Strength::S128);
/// assert!(!format!("{dek:?}").contains("7, 7"));
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Dek {
    bytes: Vec<u8>,
}

impl Dek {
    /// A DEK from raw key bytes (16, 24 or 32).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Strength::from_aes_key_len(bytes.len())?;
        Ok(Dek {
            bytes: bytes.to_vec(),
        })
    }

    /// Takes ownership of key bytes, which are wiped on drop (also on error).
    pub(crate) fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Result<Self> {
        Self::from_bytes(&bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The strength this DEK provides (from its length).
    pub fn strength(&self) -> Strength {
        // ok: the length is checked at construction.
        Strength::from_aes_key_len(self.bytes.len()).unwrap_or(Strength::S128)
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dek(AES-{}, <redacted>)", self.bytes.len() * 8)
    }
}

/// Decrypted data: bytes wiped from memory on drop and redacted in `Debug`.
///
/// Dereferences to `[u8]`.
///
/// ```
/// use keyserver::Plaintext;
///
/// let p = Plaintext::from(b"secret".to_vec());
/// assert_eq!(&p[..], b"secret");
/// assert_eq!(format!("{p:?}"), "Plaintext(6 bytes, <redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Default)]
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// Moves the bytes out. The caller becomes responsible for wiping them.
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl From<Vec<u8>> for Plaintext {
    fn from(v: Vec<u8>) -> Self {
        Plaintext(v)
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({} bytes, <redacted>)", self.0.len())
    }
}
