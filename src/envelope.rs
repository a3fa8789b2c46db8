//! The data ciphertext format ("envelope"), version 1.
//!
//! Owned by the core: every [`CipherSuite`] produces the same bytes for the
//! same inputs, so data sealed with one suite opens with any other.
//!
//! ```text
//! offset  size  field
//!      0     3  magic "KSE"
//!      3     1  format version = 1
//!      4     1  algorithm: 1 = HKDF-SHA256 + AES-128-GCM,
//!                          2 = HKDF-SHA256 + AES-192-GCM,
//!                          3 = HKDF-SHA256 + AES-256-GCM
//!      5    32  key id of the KEK whose DEK sealed it
//!     37    32  salt (random)
//!     69    12  nonce (random)
//!     81     n  AES-GCM ciphertext (n = plaintext length)
//!   81+n    16  AES-GCM tag
//! ```
//!
//! The per-message key is `HKDF-SHA256(ikm = DEK, salt = salt,
//! info = "keyserver envelope v1" || algorithm)`, as long as the DEK. The AES-GCM
//! associated data is the 81-byte header followed by the caller's context, so
//! the header and the context are both authenticated. Because each message
//! has its own key, the SP 800-38D bound of 2^32 random nonces per key never
//! applies to the DEK, however long it lives.

use crate::format::{dek_alg_id, derive_key, strength_of_alg_id, ENVELOPE_MAGIC};
use crate::suite::{CipherSuite, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::{Dek, Error, KeyId, Plaintext, Result, Strength};

/// The envelope format version this crate writes.
pub const VERSION: u8 = 1;
/// Length of the random HKDF salt.
pub const SALT_LEN: usize = 32;
/// Length of the header (authenticated, in clear).
pub const HEADER_LEN: usize = 3 + 1 + 1 + KeyId::LEN + SALT_LEN + GCM_NONCE_LEN;
/// Bytes an envelope adds to the plaintext.
pub const OVERHEAD: usize = HEADER_LEN + GCM_TAG_LEN;
/// Largest plaintext AES-GCM allows under one key (SP 800-38D: 2^39 - 256 bits).
pub const MAX_PLAINTEXT: u64 = crate::suite::GCM_MAX_PLAINTEXT;
const HKDF_INFO: &[u8] = b"keyserver envelope v1";

/// The clear header of an envelope.
///
/// ```
/// # #[cfg(feature = "cipher-rustcrypto")] {
/// use keyserver::{envelope, Dek, KeyId};
/// use keyserver::backends::RustCrypto;
///
/// let dek = Dek::from_bytes(&[1; 16])?;
/// let id = KeyId::from_bytes([2; 32]);
/// let sealed = envelope::seal(&RustCrypto::new(), &id, &dek, b"", b"data")?;
/// assert_eq!(envelope::Header::parse(&sealed)?.key_id, id);
/// # }
/// # Ok::<(), keyserver::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The strength (and so the AES key size) of the sealing DEK.
    pub strength: Strength,
    /// The key id of the KEK whose DEK sealed the data.
    pub key_id: KeyId,
    /// The random HKDF salt.
    pub salt: [u8; SALT_LEN],
    /// The random AES-GCM nonce.
    pub nonce: [u8; GCM_NONCE_LEN],
}

impl Header {
    /// Parses the header of an envelope and checks that a tag follows it.
    ///
    /// # Errors
    /// [`Error::MalformedCiphertext`] for a wrong magic, an unknown version or
    /// algorithm, or a truncated envelope.
    pub fn parse(envelope: &[u8]) -> Result<Self> {
        let malformed = |reason: &'static str| Error::MalformedCiphertext {
            reason: reason.into(),
        };
        if envelope.len() < 4 || &envelope[..3] != ENVELOPE_MAGIC {
            return Err(malformed("not a keyserver ciphertext"));
        }
        if envelope[3] != VERSION {
            return Err(malformed("unsupported format version"));
        }
        if envelope.len() < OVERHEAD {
            return Err(malformed("truncated"));
        }
        let strength = strength_of_alg_id(envelope[4]).ok_or(malformed("unknown algorithm"))?;
        let mut key_id = [0u8; KeyId::LEN];
        key_id.copy_from_slice(&envelope[5..5 + KeyId::LEN]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&envelope[37..37 + SALT_LEN]);
        let mut nonce = [0u8; GCM_NONCE_LEN];
        nonce.copy_from_slice(&envelope[69..HEADER_LEN]);
        Ok(Header {
            strength,
            key_id: KeyId::from_bytes(key_id),
            salt,
            nonce,
        })
    }

    /// Parses the header and checks that the envelope was sealed under
    /// `kek`, before any key is fetched.
    ///
    /// # Errors
    /// As for [`Header::parse`], and [`Error::KeyMismatch`].
    pub fn parse_for(envelope: &[u8], kek: &crate::Kek) -> Result<Self> {
        let header = Self::parse(envelope)?;
        if header.key_id != kek.id() {
            return Err(Error::KeyMismatch {
                expected: header.key_id,
                given: kek.id(),
            });
        }
        Ok(header)
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..3].copy_from_slice(ENVELOPE_MAGIC);
        h[3] = VERSION;
        h[4] = dek_alg_id(self.strength);
        h[5..37].copy_from_slice(self.key_id.as_bytes());
        h[37..69].copy_from_slice(&self.salt);
        h[69..].copy_from_slice(&self.nonce);
        h
    }
}

/// Seals `plaintext` under `dek` with a fresh random salt and nonce from the
/// suite's CSPRNG, binding `context` as associated data.
///
/// # Errors
/// [`Error::TooLarge`] above [`MAX_PLAINTEXT`]; [`Error::Crypto`] if the
/// random number generator fails.
pub fn seal<C: CipherSuite + ?Sized>(
    suite: &C,
    key_id: &KeyId,
    dek: &Dek,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    seal_into(suite, key_id, dek, context, plaintext, &mut out)?;
    Ok(out)
}

/// [`seal`] into the caller's buffer: `out` is cleared, then holds the
/// envelope. Its capacity is reused, so sealing many messages through one
/// buffer costs no allocation once it is large enough (a small context is
/// authenticated from the stack, too).
///
/// On failure `out` is left empty.
///
/// ```
/// # #[cfg(feature = "cipher-rustcrypto")] {
/// use keyserver::{envelope, Dek, KeyId};
/// use keyserver::backends::RustCrypto;
///
/// let (suite, dek, id) = (RustCrypto::new(), Dek::from_bytes(&[1; 16])?, KeyId::from_bytes([2; 32]));
/// let (mut sealed, mut opened) = (Vec::new(), Vec::new());
/// for message in [&b"one"[..], b"two", b"three"] {
///     envelope::seal_into(&suite, &id, &dek, b"ctx", message, &mut sealed)?;
///     envelope::open_into(&suite, &dek, b"ctx", &sealed, &mut opened)?;
///     assert_eq!(opened, message);
/// }
/// # }
/// # Ok::<(), keyserver::Error>(())
/// ```
///
/// # Errors
/// As for [`seal`].
pub fn seal_into<C: CipherSuite + ?Sized>(
    suite: &C,
    key_id: &KeyId,
    dek: &Dek,
    context: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    let mut random = [0u8; SALT_LEN + GCM_NONCE_LEN];
    suite.fill_random(&mut random)?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&random[..SALT_LEN]);
    let mut nonce = [0u8; GCM_NONCE_LEN];
    nonce.copy_from_slice(&random[SALT_LEN..]);
    seal_parts(suite, key_id, dek, context, plaintext, salt, nonce, out)
}

/// Runs `f` on the associated data `header || context`: on the stack when
/// the context is small, so the common case allocates nothing.
fn with_aad<R>(header: &[u8], context: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const STACK: usize = 512;
    let len = header.len() + context.len();
    if len <= STACK {
        let mut aad = [0u8; STACK];
        aad[..header.len()].copy_from_slice(header);
        aad[header.len()..len].copy_from_slice(context);
        f(&aad[..len])
    } else {
        f(&[header, context].concat())
    }
}

/// Seals with a caller-chosen salt and nonce: deterministic, for known-answer
/// tests only. Never reuse a salt and nonce pair with the same DEK; use
/// [`seal`].
///
/// # Errors
/// As for [`seal`].
pub fn seal_with_salt_and_nonce<C: CipherSuite + ?Sized>(
    suite: &C,
    key_id: &KeyId,
    dek: &Dek,
    context: &[u8],
    plaintext: &[u8],
    salt: [u8; SALT_LEN],
    nonce: [u8; GCM_NONCE_LEN],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    seal_parts(
        suite, key_id, dek, context, plaintext, salt, nonce, &mut out,
    )?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn seal_parts<C: CipherSuite + ?Sized>(
    suite: &C,
    key_id: &KeyId,
    dek: &Dek,
    context: &[u8],
    plaintext: &[u8],
    salt: [u8; SALT_LEN],
    nonce: [u8; GCM_NONCE_LEN],
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    if plaintext.len() as u64 > MAX_PLAINTEXT {
        return Err(Error::TooLarge {
            size: plaintext.len() as u64,
            limit: MAX_PLAINTEXT,
        });
    }
    let header = Header {
        strength: dek.strength(),
        key_id: *key_id,
        salt,
        nonce,
    }
    .encode();
    let key = derive_key(suite, dek, &salt, HKDF_INFO, header[4])?;
    // Sealed straight into `out` where the suite can (no copy of the
    // plaintext first), and at most one allocation, none when `out` is
    // large enough already.
    crate::suite::reserve_wiped(out, OVERHEAD + plaintext.len());
    out.extend_from_slice(&header);
    let sealed = with_aad(&header, context, |aad| {
        suite.aes_gcm_seal_append(&key, &nonce, aad, plaintext, out)
    });
    if sealed.is_err() {
        // Never leave a copy of the plaintext behind.
        zeroize::Zeroize::zeroize(out);
    }
    sealed
}

/// Opens an envelope sealed under `dek` with the same `context`.
///
/// It does not check which KEK the envelope names: callers that hold a KEK
/// compare [`Header::key_id`] first (the server does).
///
/// # Errors
/// [`Error::MalformedCiphertext`] for a structure this version cannot read;
/// [`Error::DecryptionFailed`] if the DEK is not the sealing one, the context
/// differs, or any byte was changed.
pub fn open<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    context: &[u8],
    envelope: &[u8],
) -> Result<Plaintext> {
    let mut out = Vec::new();
    open_into(suite, dek, context, envelope, &mut out)?;
    Ok(Plaintext::from(out))
}

/// [`open`] into the caller's buffer: `out` is cleared, then holds the
/// plaintext; its capacity is reused (see [`seal_into`]). The envelope is
/// only read, so a failure loses nothing: `out` is left empty, and no
/// unauthenticated byte ever reaches it.
///
/// The buffer holds plaintext: wipe it when done (a
/// `zeroize::Zeroizing<Vec<u8>>` dereferences to one, and wipes its whole
/// capacity on drop).
///
/// # Errors
/// As for [`open`].
pub fn open_into<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    context: &[u8],
    envelope: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    // Cleared, not wiped: what the last message left in the spare capacity
    // is the caller's to wipe (wiping it on every call would cost a pass
    // over the buffer per message).
    out.clear();
    let header = Header::parse(envelope)?;
    if header.strength != dek.strength() {
        // Sealed under a DEK of another size: certainly not this DEK.
        return Err(Error::DecryptionFailed);
    }
    let key = derive_key(suite, dek, &header.salt, HKDF_INFO, envelope[4])?;
    // Header::parse checked that a header and a tag are there.
    let (body, tag) = envelope[HEADER_LEN..].split_at(envelope.len() - OVERHEAD);
    let mut tag_bytes = [0u8; GCM_TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    // Opened straight into `out` where the suite can (no copy first);
    // nothing unauthenticated is left there if authentication fails.
    crate::suite::reserve_wiped(out, body.len());
    let opened = with_aad(&envelope[..HEADER_LEN], context, |aad| {
        suite.aes_gcm_open_append(&key, &header.nonce, aad, body, &tag_bytes, out)
    });
    if opened.is_err() {
        zeroize::Zeroize::zeroize(out);
    }
    opened
}
