//! What the three byte formats share (docs/FORMAT.md): their magic numbers,
//! the DEK algorithm ids, and the one key derivation. The envelope
//! ([`crate::envelope`]), the stream ([`crate::stream`]) and the stored
//! record ([`crate::WrappedDek`]) build on this module and on nothing of each
//! other's.

use zeroize::Zeroizing;

use crate::crypto::CipherSuite;
use crate::{Dek, Result, Strength};

/// First bytes of a data envelope.
pub(crate) const ENVELOPE_MAGIC: &[u8; 3] = b"KSE";
/// First bytes of a stream.
pub(crate) const STREAM_MAGIC: &[u8; 3] = b"KSS";
/// First bytes of a stored wrapped-DEK record.
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"KSWR";

/// The algorithm id of a DEK / envelope of a strength: 1 = AES-128-GCM,
/// 2 = AES-192-GCM, 3 = AES-256-GCM. Shared by records and envelopes.
pub(crate) const fn dek_alg_id(strength: Strength) -> u8 {
    match strength {
        Strength::S128 => 1,
        Strength::S192 => 2,
        Strength::S256 => 3,
    }
}

/// The strength of a DEK algorithm id, if it is known.
pub(crate) const fn strength_of_alg_id(id: u8) -> Option<Strength> {
    match id {
        1 => Some(Strength::S128),
        2 => Some(Strength::S192),
        3 => Some(Strength::S256),
        _ => None,
    }
}

/// A key derived from the DEK, as long as the DEK:
/// HKDF-SHA256(ikm = DEK, salt, info = label || algorithm id). Used per message
/// here and per stream by [`crate::stream`].
///
/// The info is built on the stack; the key lives on the heap (one small
/// allocation), so it is never copied by a move and is wiped where it lies.
pub(crate) fn derive_key<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    salt: &[u8],
    label: &[u8],
    alg: u8,
) -> Result<Zeroizing<Vec<u8>>> {
    derive(suite, dek, salt, label, alg, dek.as_bytes().len())
}

/// [`derive_key`] with an output of `len` bytes.
pub(crate) fn derive<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    salt: &[u8],
    label: &[u8],
    alg: u8,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut info = [0u8; MAX_LABEL + 1];
    let info = match info.get_mut(..label.len() + 1) {
        Some(info) => info,
        None => return Err(crate::Error::policy("key derivation label too long")),
    };
    info[..label.len()].copy_from_slice(label);
    info[label.len()] = alg;
    let mut key = Zeroizing::new(vec![0u8; len]);
    suite.hkdf_sha256(dek.as_bytes(), salt, info, &mut key)?;
    Ok(key)
}

/// Longest derivation label (the formats' are about 20 bytes).
const MAX_LABEL: usize = 64;
