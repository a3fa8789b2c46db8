//! Split knowledge for the secrets one person should not hold alone: a KEK,
//! or the audit log's MAC key, split into `N` custodian shares of which any
//! `K` rebuild it and fewer reveal nothing (NIST SP 800-57 part 1, 5.6.5:
//! split knowledge and dual control).
//!
//! The sharing is Shamir's scheme over GF(2^8), byte by byte, from the
//! `vsss-rs` crate (audited, maintained, constant-time field arithmetic;
//! see `docs/OPERATIONS.md` for why it was chosen). This module adds only
//! what a custodian handles: a share file that names what it is a share of
//! and is checked before it is used.
//!
//! A share file is a PEM block (label `KEYSERVER KEY SHARE`) after one line
//! of text for the person who keeps it. The block's bytes (version 1, all
//! integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     4  magic "KSSH"
//!      4     1  version = 1
//!      5     1  kind: 1 = KEK, 2 = audit key
//!      6     1  K, the shares needed (2..=N)
//!      7     1  N, the shares made (2..=255)
//!      8     1  this share's index x (1..=N)
//!      9     3  reserved, 0
//!     12    16  split id: random, the same in every share of one split
//!     28    32  subject: the KEK's key id, or the audit key's id
//!     60     4  L, the length of the values
//!     64     L  the share's values, one per byte of the secret
//!   64+L    32  SHA-256 of bytes 0 .. 64+L
//! ```
//!
//! The checksum finds a damaged file, the split id a share of another split
//! (even of the same key), the subject a share of another key; after the
//! combination the rebuilt secret must hash to the subject again, so a share
//! that was forged with a matching checksum is found too.
//!
//! # Example
//!
//! ```
//! use keyserver::shares::{self, Share};
//! # let kek = keyserver::Kek::from_pem(include_str!("../../testing/fixtures/compat/ec.kek.pem"))?;
//! // Three custodians; any two rebuild the KEK.
//! let split = shares::split_kek(&kek, 2, 3)?;
//! let files: Vec<_> = split.iter().map(|s| s.to_pem()).collect();
//!
//! let two = [Share::from_pem(&files[0])?, Share::from_pem(&files[2])?];
//! assert_eq!(shares::combine_kek(&two)?.id(), kek.id());
//!
//! // One alone is refused, by name of what is missing.
//! let err = shares::combine_kek(&two[..1]).unwrap_err();
//! assert!(err.to_string().contains("2 shares are needed"));
//! # Ok::<(), keyserver::Error>(())
//! ```

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Kek, KeyId, Result};

/// The PEM label of a share file.
pub const PEM_LABEL: &str = "KEYSERVER KEY SHARE";
const MAGIC: &[u8; 4] = b"KSSH";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 64;
const CHECKSUM_LEN: usize = 32;
/// The largest secret a share carries (a KEK's PEM text is at most 64 KiB).
const MAX_SECRET: usize = 1 << 16;

/// What a share is a share of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareKind {
    /// A KEK (its PEM text); the subject is its key id.
    Kek,
    /// The audit log's MAC key; the subject is [`audit_key_id`].
    AuditKey,
}

impl ShareKind {
    fn id(self) -> u8 {
        match self {
            ShareKind::Kek => 1,
            ShareKind::AuditKey => 2,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(ShareKind::Kek),
            2 => Some(ShareKind::AuditKey),
            _ => None,
        }
    }
}

impl fmt::Display for ShareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShareKind::Kek => "KEK",
            ShareKind::AuditKey => "audit key",
        })
    }
}

/// One custodian's share of a secret. Its values are wiped on drop and
/// never shown by `Debug`.
#[derive(Clone)]
pub struct Share {
    kind: ShareKind,
    threshold: u8,
    total: u8,
    index: u8,
    split_id: [u8; 16],
    subject: [u8; 32],
    values: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("kind", &self.kind)
            .field("index", &self.index)
            .field("threshold", &self.threshold)
            .field("total", &self.total)
            .field("subject", &hex::encode(self.subject))
            .field("values", &"[REDACTED]")
            .finish()
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidKey {
        reason: reason.into().into(),
    }
}

impl Share {
    /// What this is a share of.
    pub fn kind(&self) -> ShareKind {
        self.kind
    }

    /// K: how many shares rebuild the secret.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// N: how many shares the split made.
    pub fn total(&self) -> u8 {
        self.total
    }

    /// This share's number, 1..=N.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The key id of the KEK (or the audit key's id) this is a share of.
    pub fn subject(&self) -> KeyId {
        KeyId::from_bytes(self.subject)
    }

    /// The share's bytes (the layout in the module documentation).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_LEN + self.values.len() + CHECKSUM_LEN,
        ));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[
            VERSION,
            self.kind.id(),
            self.threshold,
            self.total,
            self.index,
            0,
            0,
            0,
        ]);
        out.extend_from_slice(&self.split_id);
        out.extend_from_slice(&self.subject);
        // ok: at most MAX_SECRET + 1 bytes, checked by split and decode.
        out.extend_from_slice(&(self.values.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.values);
        let sum = Sha256::digest(&out[..]);
        out.extend_from_slice(&sum);
        out
    }

    /// Parses and checks a share's bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] saying what is wrong: truncated, damaged (the
    /// checksum), an unknown version or kind, or inconsistent numbers.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN + 1 {
            return Err(invalid("key share is truncated"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(invalid(
                "key share is damaged (its checksum does not match)",
            ));
        }
        if &body[..4] != MAGIC {
            return Err(invalid("not a keyserver key share"));
        }
        if body[4] != VERSION {
            return Err(invalid(format!(
                "key share version {} is not supported",
                body[4]
            )));
        }
        let kind = ShareKind::from_id(body[5])
            .ok_or_else(|| invalid(format!("key share of unknown kind {}", body[5])))?;
        let (threshold, total, index) = (body[6], body[7], body[8]);
        check_numbers(threshold, total)?;
        if index == 0 || index > total {
            return Err(invalid(format!(
                "key share number {index} is outside 1..={total}"
            )));
        }
        let mut split_id = [0u8; 16];
        split_id.copy_from_slice(&body[12..28]);
        let mut subject = [0u8; 32];
        subject.copy_from_slice(&body[28..60]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&body[60..64]);
        let len = u32::from_be_bytes(len) as usize;
        if len != body.len() - HEADER_LEN || len == 0 || len > MAX_SECRET {
            return Err(invalid("key share length does not match its contents"));
        }
        Ok(Share {
            kind,
            threshold,
            total,
            index,
            split_id,
            subject,
            values: Zeroizing::new(body[HEADER_LEN..].to_vec()),
        })
    }

    /// The share file's text: one line saying what it is, then the PEM
    /// block.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let bytes = self.to_bytes();
        let mut text = Zeroizing::new(format!(
            "keyserver {} share {} of {} (any {} rebuild it) for {}\n",
            self.kind,
            self.index,
            self.total,
            self.threshold,
            self.subject()
        ));
        // ok: a fixed label and any bytes always encode.
        let block = Zeroizing::new(
            pem_rfc7468::encode_string(PEM_LABEL, pem_rfc7468::LineEnding::LF, &bytes)
                .unwrap_or_default(),
        );
        text.push_str(&block);
        text
    }

    /// Reads a share file's text (what [`Share::to_pem`] writes; the lines
    /// before the PEM block are ignored).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if there is no share block or it is damaged.
    pub fn from_pem(text: &str) -> Result<Self> {
        let start = text
            .find("-----BEGIN ")
            .ok_or_else(|| invalid("not a key share file (no PEM block)"))?;
        let (label, bytes) = pem_rfc7468::decode_vec(text[start..].trim_end().as_bytes())
            .map_err(|_| invalid("key share file is damaged (its PEM block does not decode)"))?;
        let bytes = Zeroizing::new(bytes);
        if label != PEM_LABEL {
            return Err(invalid(format!(
                "expected a \"{PEM_LABEL}\" PEM block, found \"{label}\""
            )));
        }
        Self::from_bytes(&bytes)
    }
}

fn check_numbers(threshold: u8, total: u8) -> Result<()> {
    if total < 2 {
        return Err(invalid("a split needs at least 2 shares"));
    }
    if threshold < 2 || threshold > total {
        return Err(invalid(format!(
            "the shares needed must be 2..={total}, not {threshold}"
        )));
    }
    Ok(())
}

/// Splits `secret` into `total` shares of which any `threshold` rebuild it.
///
/// # Errors
/// [`Error::InvalidKey`] if `2 <= threshold <= total <= 255` does not hold
/// or the secret is empty or over 64 KiB.
pub fn split_secret(
    kind: ShareKind,
    subject: KeyId,
    secret: &[u8],
    threshold: u8,
    total: u8,
) -> Result<Vec<Share>> {
    check_numbers(threshold, total)?;
    if secret.is_empty() || secret.len() > MAX_SECRET {
        return Err(invalid("the secret to split must be 1 byte to 64 KiB"));
    }
    let mut split_id = [0u8; 16];
    getrandom::fill(&mut split_id).map_err(|_| Error::Crypto {
        suite: "os",
        operation: "random split id",
    })?;
    let ids = (1..=total).map(|x| vsss_rs::IdentifierGf256(vsss_rs::Gf256(x)));
    let rng = rand_core::UnwrapErr(getrandom::SysRng);
    let raw = vsss_rs::Gf256::split_bytes_with_participant_ids_iter(
        usize::from(threshold),
        usize::from(total),
        secret,
        rng,
        ids,
    )
    .map_err(|_| invalid("the secret could not be split"))?;
    let shares = raw
        .into_iter()
        .map(|raw| {
            let raw = Zeroizing::new(raw);
            Share {
                kind,
                threshold,
                total,
                index: raw[0],
                split_id,
                subject: *subject.as_bytes(),
                values: Zeroizing::new(raw[1..].to_vec()),
            }
        })
        .collect();
    Ok(shares)
}

/// Rebuilds a secret from shares of one split: at least `K` of them,
/// distinct. Returns the secret and what it is a share of (the caller
/// checks that the secret matches its subject).
///
/// # Errors
/// [`Error::InvalidKey`] naming the problem: fewer than K shares, shares of
/// different splits, keys or kinds, or the same share twice.
pub fn combine_secret(shares: &[Share]) -> Result<(ShareKind, KeyId, Zeroizing<Vec<u8>>)> {
    let first = shares
        .first()
        .ok_or_else(|| invalid("no key shares given"))?;
    for share in &shares[1..] {
        if share.kind != first.kind {
            return Err(invalid(format!(
                "shares of different things: a {} share and a {} share",
                first.kind, share.kind
            )));
        }
        if share.subject != first.subject {
            return Err(invalid(format!(
                "shares of different keys: {} and {}",
                first.subject(),
                share.subject()
            )));
        }
        if share.split_id != first.split_id
            || share.threshold != first.threshold
            || share.total != first.total
            || share.values.len() != first.values.len()
        {
            return Err(invalid(format!(
                "shares of {} from different splits cannot be combined",
                first.subject()
            )));
        }
    }
    let mut seen = [false; 256];
    for share in shares {
        if std::mem::replace(&mut seen[usize::from(share.index)], true) {
            return Err(invalid(format!(
                "share {} of {} is given twice",
                share.index, first.total
            )));
        }
    }
    let needed = usize::from(first.threshold);
    if shares.len() < needed {
        return Err(invalid(format!(
            "{needed} shares are needed to rebuild the {}, {} given",
            first.kind,
            shares.len()
        )));
    }
    // K shares determine the polynomial. Each further share must lie on
    // it too: every K-subset ending in it rebuilds the same secret, so a
    // damaged custodian share is found even when enough good ones came.
    let secret = combine_k(&shares[..needed])?;
    for extra in &shares[needed..] {
        let mut subset: Vec<Share> = shares[..needed - 1].to_vec();
        subset.push(extra.clone());
        if combine_k(&subset)?[..] != secret[..] {
            return Err(invalid(format!(
                "share {} of {} does not agree with the others: it is not genuine",
                extra.index, first.total
            )));
        }
    }
    Ok((first.kind, first.subject(), secret))
}

/// The secret of exactly K checked shares.
fn combine_k(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>> {
    let raw: Vec<Vec<u8>> = shares
        .iter()
        .map(|s| {
            let mut raw = Vec::with_capacity(s.values.len() + 1);
            raw.push(s.index);
            raw.extend_from_slice(&s.values);
            raw
        })
        .collect();
    let raw = ZeroizeVecs(raw);
    let secret = vsss_rs::Gf256::combine_bytes(&raw.0)
        .map_err(|_| invalid("the shares could not be combined"))?;
    Ok(Zeroizing::new(secret))
}

/// Wipes a list of buffers on drop.
struct ZeroizeVecs(Vec<Vec<u8>>);

impl Drop for ZeroizeVecs {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in &mut self.0 {
            v.zeroize();
        }
    }
}

/// Splits a KEK (its PEM text) into `total` shares, any `threshold` of
/// which rebuild it; each names the key id.
///
/// # Errors
/// As [`split_secret`].
pub fn split_kek(kek: &Kek, threshold: u8, total: u8) -> Result<Vec<Share>> {
    let pem = kek.to_pem();
    split_secret(ShareKind::Kek, kek.id(), pem.as_bytes(), threshold, total)
}

/// Rebuilds a KEK from its shares and checks it is the key they name.
///
/// # Errors
/// As [`combine_secret`]; also if the shares are of another kind of
/// secret, or the rebuilt key is not the one named (a forged share).
pub fn combine_kek(shares: &[Share]) -> Result<Kek> {
    let (kind, subject, secret) = combine_secret(shares)?;
    if kind != ShareKind::Kek {
        return Err(invalid(format!("these are {kind} shares, not KEK shares")));
    }
    let rebuilt = std::str::from_utf8(&secret)
        .ok()
        .and_then(|pem| Kek::from_pem(pem).ok())
        .filter(|kek| kek.id() == subject);
    rebuilt.ok_or_else(|| {
        invalid(format!(
            "the shares do not rebuild KEK {subject}: one of them is not genuine"
        ))
    })
}

/// The id an audit key's shares name: SHA-256 of a label and the key (it
/// tells which key a share belongs to and reveals nothing of it).
pub fn audit_key_id(key: &[u8]) -> KeyId {
    let mut hash = Sha256::new();
    hash.update(b"keyserver audit key id v1\0");
    hash.update(key);
    KeyId::from_bytes(hash.finalize().into())
}

/// Rebuilds an audit key from its shares and checks it is the key named.
///
/// # Errors
/// As [`combine_kek`].
pub fn combine_audit_key(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>> {
    let (kind, subject, secret) = combine_secret(shares)?;
    if kind != ShareKind::AuditKey {
        return Err(invalid(format!(
            "these are {kind} shares, not audit key shares"
        )));
    }
    if audit_key_id(&secret) != subject {
        return Err(invalid(format!(
            "the shares do not rebuild audit key {subject}: one of them is not genuine"
        )));
    }
    Ok(secret)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secret() -> Vec<u8> {
        (0..200u16).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn split(k: u8, n: u8) -> Vec<Share> {
        let s = secret();
        split_secret(ShareKind::AuditKey, audit_key_id(&s), &s, k, n).unwrap()
    }

    /// Every subset of `shares` of size `size`, as index lists.
    fn subsets(n: usize, size: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|m| m.count_ones() as usize == size)
            .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn any_k_of_n_rebuild_and_the_bytes_round_trip() {
        for (k, n) in [(2u8, 2u8), (2, 3), (3, 5), (5, 5)] {
            let shares = split(k, n);
            assert_eq!(shares.len(), usize::from(n));
            for size in usize::from(k)..=usize::from(n) {
                for subset in subsets(usize::from(n), size) {
                    let picked: Vec<Share> = subset
                        .iter()
                        .map(|&i| Share::from_pem(&shares[i].to_pem()).unwrap())
                        .collect();
                    assert_eq!(&combine_audit_key(&picked).unwrap()[..], &secret()[..]);
                }
            }
        }
    }

    #[test]
    fn fewer_than_k_shares_reveal_nothing() {
        // Perfect secrecy, shown for every subset of K-1 shares: whatever
        // a K-th share (at an unused x) holds, the K shares rebuild some
        // secret, and as its value runs over all 256 bytes, so does every
        // byte of the rebuilt secret, each exactly once. So the K-1 shares
        // are as consistent with any secret byte as with the true one.
        let (k, n) = (3u8, 5u8);
        let shares = split(k, n);
        let len = shares[0].values.len();
        for subset in subsets(usize::from(n), usize::from(k) - 1) {
            // Our own combination refuses them, naming what is missing.
            let picked: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
            let err = combine_secret(&picked).unwrap_err().to_string();
            assert!(err.contains("3 shares are needed"), "{err}");
            // An x no share of the subset has (there is always one: 255 > n).
            let free = (1..=255u8)
                .find(|x| !subset.iter().any(|&i| shares[i].index == *x))
                .unwrap();
            let mut seen = vec![[false; 256]; len];
            for v in 0..=255u8 {
                let mut raw: Vec<Vec<u8>> = picked
                    .iter()
                    .map(|s| [&[s.index][..], &s.values[..]].concat())
                    .collect();
                raw.push([&[free][..], &vec![v; len][..]].concat());
                let rebuilt = vsss_rs::Gf256::combine_bytes(&raw).unwrap();
                for (pos, byte) in rebuilt.iter().enumerate() {
                    assert!(!seen[pos][usize::from(*byte)], "byte {pos} repeats");
                    seen[pos][usize::from(*byte)] = true;
                }
            }
            assert!(seen.iter().all(|s| s.iter().all(|&b| b)));
        }
    }

    #[test]
    fn shares_are_random_and_never_the_secret() {
        // The K-1 secrecy test above holds for any points; this one shows
        // the points are drawn at random: over 2,000 splits of one secret,
        // the first value of share 1 takes nearly every byte value (a
        // polynomial with constant coefficients would give one).
        let s = secret();
        let mut seen = [false; 256];
        for _ in 0..2000 {
            let shares = split_secret(ShareKind::AuditKey, audit_key_id(&s), &s, 3, 5).unwrap();
            assert_ne!(&shares[0].values[..], &s[..]);
            seen[usize::from(shares[0].values[0])] = true;
        }
        assert!(seen.iter().filter(|&&b| b).count() > 240);
    }

    #[test]
    fn an_extra_share_that_disagrees_is_found() {
        let shares = split(2, 4);
        let mut bad = shares[3].clone();
        bad.values[5] ^= 0x40;
        let err = combine_secret(&[shares[0].clone(), shares[1].clone(), bad])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not agree"), "{err}");
        assert_eq!(
            &combine_audit_key(&shares).unwrap()[..],
            &secret()[..],
            "all four agree"
        );
    }

    #[test]
    fn two_splits_of_one_secret_differ_and_do_not_mix() {
        let a = split(2, 3);
        let b = split(2, 3);
        assert_ne!(a[0].values, b[0].values, "fresh randomness per split");
        let err = combine_secret(&[a[0].clone(), b[1].clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("different splits"), "{err}");
    }

    #[test]
    fn wrong_mixed_damaged_and_repeated_shares_are_named() {
        let shares = split(2, 3);
        // Damaged: every single byte flip of the encoding is found.
        let bytes = shares[0].to_bytes();
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 0x10;
            assert!(Share::from_bytes(&bad).is_err(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(Share::from_bytes(&bytes[..cut]).is_err());
        }
        let err = Share::from_bytes(&{
            let mut b = bytes.to_vec();
            b[70] ^= 1;
            b
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("damaged"), "{err}");
        // Repeated.
        let err = combine_secret(&[shares[1].clone(), shares[1].clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
        // Another key's share.
        let other = split_secret(ShareKind::AuditKey, audit_key_id(b"x"), b"x", 2, 3).unwrap();
        let err = combine_secret(&[shares[0].clone(), other[1].clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("different keys"), "{err}");
        // Audit key shares are not KEK shares.
        let err = combine_kek(&shares[..2]).unwrap_err().to_string();
        assert!(err.contains("not KEK shares"), "{err}");
        // A forged share with a valid checksum: the rebuilt key is not the
        // one named.
        let mut forged = shares[1].clone();
        forged.values[0] ^= 1;
        let forged = Share::from_bytes(&forged.to_bytes()).unwrap();
        let err = combine_audit_key(&[shares[0].clone(), forged])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not genuine"), "{err}");
        // Bad numbers.
        for (k, n) in [(1u8, 3u8), (4, 3), (0, 0), (2, 1)] {
            assert!(split_secret(ShareKind::Kek, audit_key_id(b"x"), b"x", k, n).is_err());
        }
        assert!(split_secret(ShareKind::Kek, audit_key_id(b""), b"", 2, 3).is_err());
    }

    proptest::proptest! {
        /// Any bytes, and any text, parse to a share or to a typed error,
        /// never a panic; a valid share with any suffix cut stays refused.
        #[test]
        fn any_input_is_a_share_or_a_typed_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), cut in 0usize..200) {
            let _ = Share::from_bytes(&bytes);
            let _ = Share::from_pem(&String::from_utf8_lossy(&bytes));
            let good = split(2, 3)[0].to_bytes();
            let cut = cut.min(good.len());
            proptest::prop_assert!(Share::from_bytes(&good[..good.len() - cut]).is_ok() == (cut == 0));
            let mut framed = b"KSSH".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = Share::from_bytes(&framed);
        }
    }

    #[test]
    fn debug_shows_no_values() {
        let shares = split(2, 2);
        let shown = format!("{:?}", shares[0]);
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains(&format!("{:?}", &shares[0].values[..4])));
    }
}
