//! The stored wrapped-DEK record and its stable byte encoding.
//!
//! The core owns this format, so a record written through one cipher suite or
//! storage backend is read by every other. Layout of version 1 (all integers
//! big-endian; see `docs/FORMAT.md`):
//!
//! ```text
//! offset  size  field
//!      0     4  magic "KSWR"
//!      4     1  record version = 1
//!      5     1  wrap algorithm: 1 = RSA-OAEP, SHA-256, MGF1-SHA-256, empty label;
//!               2, 3, 4 = HPKE base mode, DHKEM(P-256 / P-384 / P-521);
//!               5, 6 = HPKE base mode, MLKEM768-P256 / MLKEM1024-P384
//!      6     1  DEK algorithm: 1 = AES-128-GCM, 2 = AES-192-GCM, 3 = AES-256-GCM
//!      7     1  reserved, 0
//!      8     8  created: seconds since the Unix epoch
//!     16    32  key id (SHA-256 of the KEK's SubjectPublicKeyInfo)
//!     48     2  KEK size in bits (RSA modulus, 256 / 384 / 521, or 768 / 1024)
//!     50     2  n = length of the wrapped DEK (RSA: ceil(bits / 8);
//!               HPKE: enc || AES-GCM(DEK), enc + DEK + 16 bytes)
//!     52     n  wrapped DEK
//!   52+n    32  SHA-256 of bytes 0 .. 52+n
//! ```
//!
//! Version 2 is a record sealed once more under a master key (an AES-256
//! key kept in an HSM, [`crate::seal`]): byte 4 is 2, byte 7 the seal
//! algorithm (1 = AES-256-GCM), and the `n` bytes at 52 are the master
//! key's reference (8), a random nonce (12), the wrapped DEK encrypted
//! under the master key and its tag (16), with bytes 0 .. 52 and the
//! reference as associated data. Everything else is as in version 1, so a
//! sealed record's metadata reads without the master key.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::blocking::blocking;
use crate::crypto::GCM_TAG_LEN;
use crate::format::{dek_alg_id, strength_of_alg_id, RECORD_MAGIC};
use crate::key::{check_kek, KekKind};
use crate::seal::SealKeyRef;
use crate::{CipherSuite, Curve, Dek, Error, HybridKem, Kek, KekAlg, KeyId, Result, Strength};

const VERSION: u8 = 1;
/// The record version of a sealed record.
const SEALED_VERSION: u8 = 2;
/// Seal algorithm id: AES-256-GCM under a master key.
pub const SEAL_AES256_GCM: u8 = 1;
/// What sealing adds to a wrapped DEK: the master key reference, the
/// nonce and the tag.
pub const SEAL_OVERHEAD: usize = SEAL_KEY_REF_LEN + 12 + GCM_TAG_LEN;
/// The length of a master key reference.
pub const SEAL_KEY_REF_LEN: usize = 8;
/// Wrap algorithm id: RSA-OAEP with SHA-256 and MGF1-SHA-256, empty label.
pub const WRAP_RSA_OAEP_SHA256: u8 = 1;
/// Wrap algorithm id: HPKE base mode, DHKEM(P-256, HKDF-SHA256),
/// HKDF-SHA256, AES-128-GCM ([`crate::hpke`]).
pub const WRAP_HPKE_P256: u8 = 2;
/// Wrap algorithm id: HPKE base mode, DHKEM(P-384, HKDF-SHA384),
/// HKDF-SHA384, AES-256-GCM.
pub const WRAP_HPKE_P384: u8 = 3;
/// Wrap algorithm id: HPKE base mode, DHKEM(P-521, HKDF-SHA512),
/// HKDF-SHA512, AES-256-GCM.
pub const WRAP_HPKE_P521: u8 = 4;
/// Wrap algorithm id: HPKE base mode, MLKEM768-P256 (draft-ietf-hpke-pq),
/// HKDF-SHA256, AES-256-GCM ([`crate::hybrid`]).
pub const WRAP_HPKE_MLKEM768_P256: u8 = 5;
/// Wrap algorithm id: HPKE base mode, MLKEM1024-P384, HKDF-SHA384,
/// AES-256-GCM.
pub const WRAP_HPKE_MLKEM1024_P384: u8 = 6;

/// The wrap algorithm id of a hybrid KEM.
const fn hybrid_wrap_id(kem: HybridKem) -> u8 {
    match kem {
        HybridKem::MlKem768P256 => WRAP_HPKE_MLKEM768_P256,
        HybridKem::MlKem1024P384 => WRAP_HPKE_MLKEM1024_P384,
    }
}

/// The HPKE `info` of a wrapped DEK: a label, the wrap algorithm id and the
/// DEK algorithm id, so a wrapped key opens only as what it was sealed as.
fn hpke_info(wrap: u8, strength: Strength) -> [u8; 26] {
    let mut info = [0u8; 26];
    info[..24].copy_from_slice(b"keyserver wrapped DEK v1");
    info[24] = wrap;
    info[25] = dek_alg_id(strength);
    info
}

/// The wrap algorithm id of a curve.
const fn hpke_wrap_id(curve: Curve) -> u8 {
    match curve {
        Curve::P256 => WRAP_HPKE_P256,
        Curve::P384 => WRAP_HPKE_P384,
        Curve::P521 => WRAP_HPKE_P521,
    }
}
const HEADER_LEN: usize = 52;
const CHECKSUM_LEN: usize = 32;

/// A wrapped data-encryption key as stored: the DEK encrypted with
/// RSA-OAEP-SHA256 under the public half of a KEK, with the metadata needed to
/// use it. It contains nothing secret without the KEK.
///
/// # Example
///
/// ```
/// use keyserver::{KeyId, Strength, WrappedDek};
///
/// let id = KeyId::from_bytes([1; 32]);
/// let rec = WrappedDek::new(id, 3072, Strength::S128, 1_700_000_000, vec![9; 384])?;
/// let bytes = rec.encode();
/// assert_eq!(WrappedDek::decode(&bytes, &id)?, rec);
///
/// // Any damage is reported as a corrupt record naming the key id.
/// let mut bad = bytes.clone();
/// bad[60] ^= 1;
/// let err = WrappedDek::decode(&bad, &id).unwrap_err();
/// assert!(err.to_string().contains(&id.to_string()));
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedDek {
    key_id: KeyId,
    alg: KekAlg,
    kek_bits: u16,
    strength: Strength,
    created: u64,
    /// The wrapped DEK; in a sealed record, the master key's reference,
    /// the nonce, the wrapped DEK sealed under the master key, and the tag.
    wrapped: Vec<u8>,
    /// Whether `wrapped` is sealed under a master key (record version 2).
    sealed: bool,
    /// The SHA-256 checksum of the encoding's body: a function of the
    /// fields above (so equality is unaffected), computed once when the
    /// record is made, or taken from the bytes it was decoded from once
    /// verified, so that encoding a record read from storage (every
    /// `get_wrapped` answer) does not hash it again.
    sum: [u8; CHECKSUM_LEN],
}

impl WrappedDek {
    /// A record for `wrapped`, the DEK of `strength` wrapped with RSA-OAEP
    /// under the KEK `key_id` of `kek_bits` bits, created at `created` (Unix
    /// seconds).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the KEK size is outside 2048..=16384 bits or
    /// the wrapped length does not match it.
    pub fn new(
        key_id: KeyId,
        kek_bits: usize,
        strength: Strength,
        created: u64,
        wrapped: Vec<u8>,
    ) -> Result<Self> {
        Self::with_alg(KekAlg::Rsa, key_id, kek_bits, strength, created, wrapped)
    }

    /// A record for a DEK wrapped under a KEK of `alg`: for [`KekAlg::Ec`],
    /// `kek_bits` is the curve's (256, 384 or 521) and `wrapped` is HPKE's
    /// `enc` followed by the sealed DEK.
    ///
    /// ```
    /// use keyserver::{KekAlg, KeyId, Strength, WrappedDek};
    ///
    /// let id = KeyId::from_bytes([1; 32]);
    /// let rec = WrappedDek::with_alg(KekAlg::Ec, id, 384, Strength::S192, 0, vec![4; 97 + 24 + 16])?;
    /// assert_eq!(WrappedDek::decode(&rec.encode(), &id)?.alg(), KekAlg::Ec);
    /// assert!(WrappedDek::with_alg(KekAlg::Ec, id, 384, Strength::S192, 0, vec![4; 97]).is_err());
    /// # Ok::<(), keyserver::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the KEK size is not one of the algorithm's
    /// or the wrapped length does not match it and the DEK.
    pub fn with_alg(
        alg: KekAlg,
        key_id: KeyId,
        kek_bits: usize,
        strength: Strength,
        created: u64,
        wrapped: Vec<u8>,
    ) -> Result<Self> {
        let mut record = Self::checked(alg, key_id, kek_bits, strength, created, wrapped, false)?;
        record.sum = Sha256::digest(record.body()).into();
        Ok(record)
    }

    /// Whether this record is sealed under a master key (version 2): its
    /// wrapped DEK must be unsealed ([`WrappedDek::unseal`]) before a KEK
    /// can open it.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// The reference of the master key a sealed record is sealed under.
    pub fn seal_key_ref(&self) -> Option<SealKeyRef> {
        self.sealed
            .then(|| SealKeyRef(fixed(&self.wrapped[..SEAL_KEY_REF_LEN])))
    }

    /// The first 52 bytes of this record's encoding as a sealed record
    /// whose wrapped part is `len` bytes, then the master key reference:
    /// what the seal authenticates.
    fn seal_aad(&self, len: usize, key: SealKeyRef) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_LEN + SEAL_KEY_REF_LEN);
        self.header_into(&mut header, SEALED_VERSION, SEAL_AES256_GCM, len);
        header.extend_from_slice(&key.0);
        header
    }

    /// This record sealed under the master key `seal` uses for new records
    /// (a sealed record is returned as it is).
    ///
    /// # Errors
    /// The seal's failure (the token is gone, say).
    pub fn seal(&self, seal: &dyn crate::seal::Seal) -> Result<WrappedDek> {
        if self.sealed {
            return Ok(self.clone());
        }
        let key = seal.current_key();
        let len = self.wrapped.len() + SEAL_OVERHEAD;
        let aad = self.seal_aad(len, key);
        let sealed = seal.encrypt(key, &aad, &self.wrapped)?;
        if sealed.len() != len - SEAL_KEY_REF_LEN {
            return Err(Error::Storage {
                backend: "seal".into(),
                message: format!("{}: a ciphertext of the wrong length", seal.describe()),
                source: None,
            });
        }
        let mut wrapped = Vec::with_capacity(len);
        wrapped.extend_from_slice(&key.0);
        wrapped.extend_from_slice(&sealed);
        let mut record = Self::checked(
            self.alg,
            self.key_id,
            self.kek_bits(),
            self.strength,
            self.created,
            wrapped,
            true,
        )?;
        record.sum = Sha256::digest(record.body()).into();
        Ok(record)
    }

    /// This record with its wrapped DEK unsealed by `seal` (an unsealed
    /// record is returned as it is).
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] if the sealed part does not authenticate
    /// under its master key (it was changed); the seal's own error if the
    /// master key it names is not there or the token fails.
    pub fn unseal(&self, seal: &dyn crate::seal::Seal) -> Result<WrappedDek> {
        let Some(key) = self.seal_key_ref() else {
            return Ok(self.clone());
        };
        let aad = self.seal_aad(self.wrapped.len(), key);
        let plain = seal
            .decrypt(key, &aad, &self.wrapped[SEAL_KEY_REF_LEN..])
            .map_err(|e| match e {
                Error::DecryptionFailed => Error::CorruptRecord {
                    key_id: self.key_id,
                    reason: "the sealed record does not authenticate under its master key".into(),
                },
                other => other,
            })?;
        WrappedDek::with_alg(
            self.alg,
            self.key_id,
            self.kek_bits(),
            self.strength,
            self.created,
            plain.to_vec(),
        )
    }

    /// The error for a sealed record met where no seal is configured.
    pub(crate) fn sealed_error(&self) -> Error {
        Error::Storage {
            backend: "seal".into(),
            message: format!(
                "the record of {} is sealed under master key {}: this server has no master \
                 key (--seal)",
                self.key_id,
                self.seal_key_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default()
            ),
            source: None,
        }
    }

    /// The record of these fields if they are consistent, its checksum not
    /// yet set (the caller's to set before the record is used).
    fn checked(
        alg: KekAlg,
        key_id: KeyId,
        kek_bits: usize,
        strength: Strength,
        created: u64,
        wrapped: Vec<u8>,
        sealed: bool,
    ) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidKey {
            reason: reason.into(),
        };
        let plain_len = if sealed {
            wrapped
                .len()
                .checked_sub(SEAL_OVERHEAD)
                .ok_or(invalid("sealed wrapped key is too short"))?
        } else {
            wrapped.len()
        };
        match alg {
            KekAlg::Rsa => {
                if !(crate::key::MIN_RSA_BITS..=crate::key::MAX_RSA_BITS).contains(&kek_bits) {
                    return Err(invalid("KEK size outside 2048..=16384 bits"));
                }
                if plain_len != kek_bits.div_ceil(8) {
                    return Err(invalid("wrapped key length does not match the KEK size"));
                }
            }
            KekAlg::Ec => {
                let curve = Curve::from_bits(kek_bits)
                    .ok_or(invalid("an EC KEK is on P-256, P-384 or P-521"))?;
                // A malformed point is the unwrap's failure (code 3), as
                // for every other changed byte.
                if plain_len != curve.point_len() + strength.aes_key_len() + GCM_TAG_LEN {
                    return Err(invalid("wrapped key length does not match the KEK and DEK"));
                }
            }
            KekAlg::HybridPq => {
                let kem = HybridKem::from_bits(kek_bits)
                    .ok_or(invalid("a hybrid KEK is ML-KEM-768 or ML-KEM-1024"))?;
                if plain_len != kem.enc_len() + strength.aes_key_len() + GCM_TAG_LEN {
                    return Err(invalid("wrapped key length does not match the KEK and DEK"));
                }
            }
        }
        Ok(WrappedDek {
            key_id,
            alg,
            // ok: bounded by MAX_RSA_BITS above.
            kek_bits: kek_bits as u16,
            strength,
            created,
            wrapped,
            sealed,
            sum: [0; CHECKSUM_LEN],
        })
    }

    /// The current time in seconds since the Unix epoch (0 if the clock is
    /// before 1970).
    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The key id of the KEK this DEK is wrapped under.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The size of the wrapping KEK in bits: the RSA modulus, or the EC
    /// curve's field (256, 384, 521).
    pub fn kek_bits(&self) -> usize {
        usize::from(self.kek_bits)
    }

    /// The algorithm of the wrapping KEK.
    pub fn alg(&self) -> KekAlg {
        self.alg
    }

    /// The wrap algorithm id of the record format.
    fn wrap_id(&self) -> u8 {
        match self.alg {
            KekAlg::Rsa => WRAP_RSA_OAEP_SHA256,
            // ok: with_alg checked the size is a curve's.
            KekAlg::Ec => hpke_wrap_id(Curve::from_bits(self.kek_bits()).unwrap_or(Curve::P256)),
            // ok: with_alg checked the size is an ML-KEM's.
            KekAlg::HybridPq => hybrid_wrap_id(
                HybridKem::from_bits(self.kek_bits()).unwrap_or(HybridKem::MlKem768P256),
            ),
        }
    }

    /// The strength (and so the AES key size) of the wrapped DEK.
    pub fn strength(&self) -> Strength {
        self.strength
    }

    /// Creation time, seconds since the Unix epoch.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The wrapped DEK: the RSA-OAEP ciphertext, or HPKE's `enc` followed
    /// by the sealed DEK.
    pub fn wrapped(&self) -> &[u8] {
        &self.wrapped
    }

    /// A record for unit tests: key id `[n; 32]`, a 3072-bit KEK's worth of
    /// `n` bytes.
    #[cfg(any(test, feature = "mocks"))]
    #[doc(hidden)]
    pub fn test_record(n: u8) -> Self {
        WrappedDek::new(
            KeyId::from_bytes([n; 32]),
            3072,
            Strength::S128,
            0,
            vec![n; 384],
        )
        .expect("a valid record") // ok: test only (cfg(test)), constant valid input
    }

    /// The stable byte encoding (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.sum);
        out
    }

    /// The encoding without its checksum, with room for it.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.wrapped.len() + CHECKSUM_LEN);
        let (version, seal) = if self.sealed {
            (SEALED_VERSION, SEAL_AES256_GCM)
        } else {
            (VERSION, 0)
        };
        self.header_into(&mut out, version, seal, self.wrapped.len());
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// The 52-byte header of an encoding of `version` whose wrapped part is
    /// `len` bytes.
    fn header_into(&self, out: &mut Vec<u8>, version: u8, seal: u8, len: usize) {
        out.extend_from_slice(RECORD_MAGIC);
        out.push(version);
        out.push(self.wrap_id());
        out.push(dek_alg_id(self.strength));
        out.push(seal);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.kek_bits.to_be_bytes());
        // ok: len <= 2048 + SEAL_OVERHEAD, checked in with_alg().
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }

    /// Parses and checks a record read from storage under `expected`.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] naming `expected` if the bytes are truncated,
    /// fail the checksum, have an unknown version or algorithm, or belong to
    /// another key id.
    pub fn decode(bytes: &[u8], expected: &KeyId) -> Result<Self> {
        let corrupt = |reason: &'static str| Error::CorruptRecord {
            key_id: *expected,
            reason: reason.into(),
        };
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(corrupt("truncated"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(corrupt("checksum mismatch"));
        }
        if &body[0..4] != RECORD_MAGIC {
            return Err(corrupt("not a keyserver record"));
        }
        let sealed = match (body[4], body[7]) {
            (VERSION, 0) => false,
            (VERSION, _) => return Err(corrupt("reserved byte is not zero")),
            (SEALED_VERSION, SEAL_AES256_GCM) => true,
            (SEALED_VERSION, _) => return Err(corrupt("unknown seal algorithm")),
            _ => return Err(corrupt("unsupported record version")),
        };
        let (alg, wrap_bits) = match body[5] {
            WRAP_RSA_OAEP_SHA256 => (KekAlg::Rsa, None),
            WRAP_HPKE_P256 => (KekAlg::Ec, Some(Curve::P256.bits())),
            WRAP_HPKE_P384 => (KekAlg::Ec, Some(Curve::P384.bits())),
            WRAP_HPKE_P521 => (KekAlg::Ec, Some(Curve::P521.bits())),
            WRAP_HPKE_MLKEM768_P256 => (KekAlg::HybridPq, Some(HybridKem::MlKem768P256.bits())),
            WRAP_HPKE_MLKEM1024_P384 => (KekAlg::HybridPq, Some(HybridKem::MlKem1024P384.bits())),
            _ => return Err(corrupt("unknown wrap algorithm")),
        };
        let strength = strength_of_alg_id(body[6]).ok_or(corrupt("unknown DEK algorithm"))?;
        let created = u64::from_be_bytes(fixed(&body[8..16]));
        let key_id = KeyId::from_bytes(fixed(&body[16..48]));
        if key_id != *expected {
            return Err(corrupt("record belongs to another key id"));
        }
        let kek_bits = usize::from(u16::from_be_bytes(fixed(&body[48..50])));
        let len = usize::from(u16::from_be_bytes(fixed(&body[50..52])));
        if body.len() != HEADER_LEN + len {
            return Err(corrupt("length mismatch"));
        }
        if wrap_bits.is_some_and(|bits| bits != kek_bits) {
            return Err(corrupt("KEK size does not match the wrap algorithm"));
        }
        let record = WrappedDek::checked(
            alg,
            key_id,
            kek_bits,
            strength,
            created,
            body[HEADER_LEN..].to_vec(),
            sealed,
        )
        .map_err(|_| corrupt("inconsistent KEK size"))?;
        Ok(WrappedDek {
            // Verified above: the checksum of exactly these fields' body.
            sum: fixed(sum),
            ..record
        })
    }
}

/// Copies a slice of known length into an array.
// ok: every caller passes a range of exactly N bytes of a checked buffer.
fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    out
}

/// Wraps `dek` (of `strength`) under the public half of `kek` and makes its
/// record, created at `created` (seconds since the Unix epoch): RSA-OAEP for
/// an RSA KEK, HPKE for an EC or hybrid one. The one wrap path of `generate`
/// and `rotate`; see [`unwrap_now`] for an example.
///
/// # Errors
/// A KEK weaker than `strength` asks for, or a failure of the suite.
pub fn wrap_dek<C: CipherSuite + ?Sized>(
    suite: &C,
    kek: &Kek,
    strength: Strength,
    dek: &[u8],
    created: u64,
) -> Result<WrappedDek> {
    crate::key::check_pairing(kek, strength)?;
    let wrapped = match kek.kind() {
        KekKind::Rsa { .. } => suite.rsa_oaep_wrap(kek.public_key_der(), dek)?,
        KekKind::Ec { curve } => {
            let (_, point) = crate::ec::ec_public_point(kek.public_key_der())?;
            let info = hpke_info(hpke_wrap_id(curve), strength);
            let (enc, sealed) = crate::hpke::seal(suite, curve, point, &info, b"", dek)?;
            [enc, sealed].concat()
        }
        KekKind::Hybrid { kem } => {
            let (_, public_key) = crate::hybrid::public_parts(kek.public_key_der())?;
            let info = hpke_info(hybrid_wrap_id(kem), strength);
            let cs = crate::hpke::Ciphersuite::for_hybrid(kem);
            let (enc, mut context) =
                crate::hybrid::setup_sender(suite, cs, public_key, &info, None)?;
            let sealed = context.seal(suite, b"", dek)?;
            [enc, sealed].concat()
        }
    };
    WrappedDek::with_alg(kek.alg(), kek.id(), kek.bits(), strength, created, wrapped)
}

/// Unwraps `record`'s DEK with `kek` on the calling thread, after the
/// checks a server makes: the record and the KEK agree, the strength is at
/// least `floor`, the key pair is consistent. For tests and tools that run
/// without a runtime (the conformance kit).
///
/// ```
/// use keyserver::plugin::{unwrap_now, wrap_dek};
/// use keyserver::crypto::EcKek;
/// use keyserver::{backends::RustCrypto, Kek, Strength};
/// let suite = RustCrypto::new();
/// let kek = Kek::from_pkcs8_der(&suite.generate_ec(keyserver::Curve::P256)?)?;
/// let record = wrap_dek(&suite, &kek, Strength::S128, &[7; 16], 0)?;
/// let dek = unwrap_now(&suite, &kek, &record, Strength::S128)?;
/// assert_eq!(dek.as_bytes(), &[7; 16]);
/// # Ok::<(), keyserver::Error>(())
/// ```
///
/// # Errors
/// A record of another KEK or below `floor`, a KEK whose halves do not
/// match, or a wrapped DEK that does not open, each as its own error.
pub fn unwrap_now<C: CipherSuite + ?Sized>(
    suite: &C,
    kek: &Kek,
    record: &WrappedDek,
    floor: Strength,
) -> Result<Dek> {
    check_record(kek, record, floor)?;
    check_key_pair(suite, kek)?;
    let bytes = unwrap_blocking(suite, kek, record)?;
    Dek::from_zeroizing(bytes).map_err(|_| Error::CorruptRecord {
        key_id: kek.id(),
        reason: "unwrapped key has the wrong length".into(),
    })
}

/// The checks before an unwrap: the record is this KEK's and of its kind,
/// and the KEK is strong enough for its DEK and the floor.
fn check_record(kek: &Kek, record: &WrappedDek, floor: Strength) -> Result<()> {
    let key_id = kek.id();
    let corrupt = |reason: &'static str| Error::CorruptRecord {
        key_id,
        reason: reason.into(),
    };
    if *record.key_id() != key_id {
        return Err(corrupt("the record belongs to another key"));
    }
    if record.is_sealed() {
        return Err(record.sealed_error());
    }
    if record.alg() != kek.alg() || record.kek_bits() != kek.bits() {
        return Err(corrupt(
            "the record was wrapped under another kind of key than this KEK",
        ));
    }
    check_kek(kek, record.strength(), floor)
}

/// Opens `record` with `kek` (checked by the caller to be one consistent
/// key pair): a failure to authenticate is [`Error::UnwrapFailed`].
fn unwrap_blocking<C: CipherSuite + ?Sized>(
    suite: &C,
    kek: &Kek,
    record: &WrappedDek,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let key_id = kek.id();
    let failed = |e| match e {
        Error::DecryptionFailed => Error::UnwrapFailed { key_id },
        other => other,
    };
    match kek.kind() {
        KekKind::Rsa { .. } => suite
            .rsa_oaep_unwrap(kek.pkcs8_der(), record.wrapped())
            .map_err(failed),
        KekKind::Ec { curve } => {
            let (enc, sealed) = record.wrapped().split_at(curve.point_len());
            let info = hpke_info(hpke_wrap_id(curve), record.strength());
            crate::hpke::open(suite, kek.pkcs8_der(), enc, &info, b"", sealed).map_err(|e| {
                match e {
                    // A point not on the curve in a stored record: it does
                    // not open under this key.
                    Error::InvalidKey { .. } => Error::UnwrapFailed { key_id },
                    other => failed(other),
                }
            })
        }
        KekKind::Hybrid { kem } => {
            let (enc, sealed) = record.wrapped().split_at(kem.enc_len());
            let info = hpke_info(hybrid_wrap_id(kem), record.strength());
            let cs = crate::hpke::Ciphersuite::for_hybrid(kem);
            let seed = crate::hybrid::hybrid_private_parts(kek.pkcs8_der())?.seed;
            crate::hybrid::setup_receiver(suite, cs, seed, enc, &info)
                .and_then(|mut context| context.open(suite, b"", sealed))
                .map_err(|e| match e {
                    // A point off the curve in a stored record: it does not
                    // open under this key.
                    Error::InvalidKey { .. } => Error::UnwrapFailed { key_id },
                    other => failed(other),
                })
        }
    }
}

/// Checks that `kek` is one consistent key pair, whatever its algorithm.
pub(crate) fn check_key_pair<C: CipherSuite + ?Sized>(suite: &C, kek: &Kek) -> Result<()> {
    match kek.kind() {
        KekKind::Rsa { .. } => suite.rsa_check_key_pair(kek.pkcs8_der()),
        KekKind::Ec { .. } => crate::crypto::ec_kek(suite)?.ec_check_key_pair(kek.pkcs8_der()),
        KekKind::Hybrid { .. } => crate::hybrid::check_key_pair(suite, kek.pkcs8_der()),
    }
}

/// The private key documents that passed the key-pair check
/// ([`check_key_pair`]) on this server, by the [`Kek::fingerprint`] of
/// their exact bytes: the most recently used [`CheckedKeks::CAPACITY`].
///
/// The check is a function of those bytes alone, so a document seen and
/// checked before needs no second check (for RSA it costs about a third of
/// a `get_key`). A different document under the same key id (a forged or
/// damaged private half) has another fingerprint and is checked. Only
/// fingerprints are kept: SHA-256 of a private key is no use without the
/// key itself. A failed check is not remembered.
pub(crate) struct CheckedKeks(std::sync::Mutex<lru::LruCache<[u8; 32], ()>>);

impl CheckedKeks {
    /// Documents remembered: 32 bytes each, 128 KiB in all.
    pub(crate) const CAPACITY: usize = 4096;

    pub(crate) fn new() -> Self {
        let capacity =
            std::num::NonZeroUsize::new(Self::CAPACITY).unwrap_or(std::num::NonZeroUsize::MIN);
        CheckedKeks(std::sync::Mutex::new(lru::LruCache::new(capacity)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<[u8; 32], ()>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `kek`'s exact document passed the check here before.
    pub(crate) fn contains(&self, kek: &Kek) -> bool {
        self.lock().get(kek.fingerprint()).is_some()
    }

    /// Remembers that `kek`'s exact document passed the check.
    pub(crate) fn insert(&self, kek: &Kek) {
        self.lock().put(*kek.fingerprint(), ());
    }

    /// How many documents are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Unwraps the DEK of `record` with `kek`, on the blocking pool, after the
/// policy checks and the key-pair check (skipped for a document `checked`
/// holds; remembered there once passed): the one unwrap path of the server
/// (server-side unwrap) and of the client (client-side unwrap).
pub(crate) async fn unwrap_record<C: CipherSuite + ?Sized>(
    suite: Arc<C>,
    kek: &Kek,
    record: WrappedDek,
    floor: Strength,
    checked: Option<&CheckedKeks>,
) -> Result<Dek> {
    let key_id = kek.id();
    let corrupt = |reason: &'static str| Error::CorruptRecord {
        key_id,
        reason: reason.into(),
    };
    check_record(kek, &record, floor)?;
    let strength = record.strength();
    let check = !checked.is_some_and(|checked| checked.contains(kek));
    let owned = kek.clone();
    let bytes = blocking(move || {
        // A KEK is one consistent key pair before it is used for anything.
        if check {
            check_key_pair(&*suite, &owned)?;
        }
        Ok::<_, Error>((unwrap_blocking(&*suite, &owned, &record), check))
    })
    .await??;
    let (bytes, checked_now) = bytes;
    if let Some(checked) = checked.filter(|_| checked_now) {
        // The check passed, whether or not the record opened.
        checked.insert(kek);
    }
    let bytes = bytes?;
    let dek =
        Dek::from_zeroizing(bytes).map_err(|_| corrupt("unwrapped key has the wrong length"))?;
    if dek.strength() != strength {
        return Err(corrupt("unwrapped key has the wrong length"));
    }
    Ok(dek)
}
