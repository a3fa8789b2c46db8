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
//!      5     1  wrap algorithm: 1 = RSA-OAEP, SHA-256, MGF1-SHA-256, empty label
//!      6     1  DEK algorithm: 1 = AES-128-GCM, 2 = AES-192-GCM, 3 = AES-256-GCM
//!      7     1  reserved, 0
//!      8     8  created: seconds since the Unix epoch
//!     16    32  key id (SHA-256 of the KEK's SubjectPublicKeyInfo)
//!     48     2  KEK modulus size in bits
//!     50     2  n = length of the wrapped DEK (= ceil(modulus bits / 8))
//!     52     n  wrapped DEK (RSA-OAEP ciphertext)
//!   52+n    32  SHA-256 of bytes 0 .. 52+n
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::blocking::blocking;
use crate::format::{dek_alg_id, strength_of_alg_id, RECORD_MAGIC};
use crate::key::check_kek;
use crate::{CipherSuite, Dek, Error, Kek, KeyId, Result, Strength};

const VERSION: u8 = 1;
/// Wrap algorithm id: RSA-OAEP with SHA-256 and MGF1-SHA-256, empty label.
pub const WRAP_RSA_OAEP_SHA256: u8 = 1;
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
    kek_bits: u16,
    strength: Strength,
    created: u64,
    wrapped: Vec<u8>,
}

impl WrappedDek {
    /// A record for `wrapped`, the DEK of `strength` wrapped under the KEK
    /// `key_id` of `kek_bits` bits, created at `created` (Unix seconds).
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
        if !(crate::key::MIN_RSA_BITS..=crate::key::MAX_RSA_BITS).contains(&kek_bits) {
            return Err(Error::InvalidKey {
                reason: "KEK size outside 2048..=16384 bits".into(),
            });
        }
        if wrapped.len() != kek_bits.div_ceil(8) {
            return Err(Error::InvalidKey {
                reason: "wrapped key length does not match the KEK size".into(),
            });
        }
        Ok(WrappedDek {
            key_id,
            // ok: bounded by MAX_RSA_BITS above.
            kek_bits: kek_bits as u16,
            strength,
            created,
            wrapped,
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

    /// The RSA modulus size of the wrapping KEK, in bits.
    pub fn kek_bits(&self) -> usize {
        usize::from(self.kek_bits)
    }

    /// The strength (and so the AES key size) of the wrapped DEK.
    pub fn strength(&self) -> Strength {
        self.strength
    }

    /// Creation time, seconds since the Unix epoch.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The RSA-OAEP ciphertext of the DEK.
    pub fn wrapped(&self) -> &[u8] {
        &self.wrapped
    }

    /// A record for unit tests: key id `[n; 32]`, a 3072-bit KEK's worth of
    /// `n` bytes.
    #[cfg(test)]
    pub(crate) fn test_record(n: u8) -> Self {
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
        let mut out = Vec::with_capacity(HEADER_LEN + self.wrapped.len() + CHECKSUM_LEN);
        out.extend_from_slice(RECORD_MAGIC);
        out.push(VERSION);
        out.push(WRAP_RSA_OAEP_SHA256);
        out.push(dek_alg_id(self.strength));
        out.push(0);
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.kek_bits.to_be_bytes());
        // ok: wrapped.len() == ceil(kek_bits / 8) <= 2048, checked in new().
        out.extend_from_slice(&(self.wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
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
        if body[4] != VERSION {
            return Err(corrupt("unsupported record version"));
        }
        if body[5] != WRAP_RSA_OAEP_SHA256 {
            return Err(corrupt("unknown wrap algorithm"));
        }
        let strength = strength_of_alg_id(body[6]).ok_or(corrupt("unknown DEK algorithm"))?;
        if body[7] != 0 {
            return Err(corrupt("reserved byte is not zero"));
        }
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
        WrappedDek::new(
            key_id,
            kek_bits,
            strength,
            created,
            body[HEADER_LEN..].to_vec(),
        )
        .map_err(|_| corrupt("inconsistent KEK size"))
    }
}

/// Copies a slice of known length into an array.
// ok: every caller passes a range of exactly N bytes of a checked buffer.
fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    out
}

/// Unwraps the DEK of `record` with `kek`, on the blocking pool, after the
/// policy checks: the one unwrap path of the server (server-side unwrap) and
/// of the client (client-side unwrap).
pub(crate) async fn unwrap_record<C: CipherSuite + ?Sized>(
    suite: Arc<C>,
    kek: &Kek,
    record: WrappedDek,
    floor: Strength,
) -> Result<Dek> {
    let key_id = kek.id();
    let corrupt = |reason: &'static str| Error::CorruptRecord {
        key_id,
        reason: reason.into(),
    };
    if *record.key_id() != key_id {
        return Err(corrupt("the record belongs to another key"));
    }
    check_kek(kek, record.strength(), floor)?;
    let strength = record.strength();
    let kek = kek.clone();
    let bytes = blocking(move || {
        // A KEK is one consistent key pair before it is used for anything.
        suite.rsa_check_key_pair(kek.pkcs8_der())?;
        suite
            .rsa_oaep_unwrap(kek.pkcs8_der(), record.wrapped())
            .map_err(|e| match e {
                Error::DecryptionFailed => Error::UnwrapFailed { key_id },
                other => other,
            })
    })
    .await??;
    let dek =
        Dek::from_zeroizing(bytes).map_err(|_| corrupt("unwrapped key has the wrong length"))?;
    if dek.strength() != strength {
        return Err(corrupt("unwrapped key has the wrong length"));
    }
    Ok(dek)
}
