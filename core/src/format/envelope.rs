//! The data ciphertext format ("envelope"), versions 1 and 2.
//!
//! Owned by the core: every [`CipherSuite`] produces the same bytes for the
//! same inputs, so data sealed with one suite opens with any other. Every
//! reader opens both versions; [`seal`] writes version 1, and a
//! [`Session`] writes version 2 (docs/FORMAT.md has both, and the reasons).
//!
//! Version 1:
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
//!
//! Version 2 is version 1 with the per-message work moved to a *session*:
//!
//! ```text
//!      0    81  the version 1 header, with version = 2 and the salt a
//!               session's, the nonce the session's message number
//!     81    32  key commitment
//!    113     n  AES-GCM ciphertext
//!  113+n    16  AES-GCM tag
//! ```
//!
//! A session key is `HKDF-SHA256(DEK, salt, "keyserver envelope v2 key" ||
//! algorithm)`, derived once per [`Session`] with its AES key schedule; the
//! nonce is the 96-bit message number (SP 800-38D §8.2.1, the deterministic
//! construction), so a message costs no random bytes, no key derivation and
//! no key set-up. The commitment, `HKDF-SHA256(DEK, salt, "keyserver envelope
//! v2 commitment" || algorithm)`, 32 bytes, binds the ciphertext to one DEK
//! (AES-GCM alone does not). The 113-byte header is the associated data,
//! followed by the caller's context.

use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::crypto::{CipherSuite, GcmKey, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::format::{dek_alg_id, derive, derive_key, strength_of_alg_id, ENVELOPE_MAGIC};
use crate::{Dek, Error, KeyId, Plaintext, Result, Strength};

/// The envelope format version [`seal`] writes (readers open 1 and 2).
pub const VERSION: u8 = 1;
/// The first bytes of every envelope, `KSE` (a stream starts with
/// [`stream::MAGIC`](crate::stream::MAGIC), `KSS`).
pub const MAGIC: &[u8; 3] = ENVELOPE_MAGIC;
/// The version a [`Session`] writes.
pub const VERSION_2: u8 = 2;
/// Length of the version 2 key commitment.
pub const COMMITMENT_LEN: usize = 32;
/// Length of the version 2 header: the version 1 layout, then the
/// commitment.
pub const HEADER_LEN_V2: usize = HEADER_LEN + COMMITMENT_LEN;
/// Bytes a version 2 envelope adds to the plaintext.
pub const OVERHEAD_V2: usize = HEADER_LEN_V2 + GCM_TAG_LEN;
/// Messages one [`Session`] seals before it is spent: its nonces are
/// message numbers below 2^32, far inside the 96-bit nonce.
pub const SESSION_MAX_MESSAGES: u64 = 1 << 32;
/// AES blocks one [`Session`] encrypts before it is spent (2^36 blocks,
/// 1 TiB, each message counted as its blocks plus one): keeps the AES-GCM
/// confidentiality bound of the session key at about 2^-57, the margin
/// draft-irtf-cfrg-aead-limits takes as its example.
pub const SESSION_MAX_BLOCKS: u64 = 1 << 36;
const KEY_INFO_V2: &[u8] = b"keyserver envelope v2 key";
const COMMITMENT_INFO_V2: &[u8] = b"keyserver envelope v2 commitment";

/// Which envelope version a writer produces: what
/// [`KeyClient::with_envelope`](crate::KeyClient::with_envelope) chooses.
///
/// ```
/// assert_eq!(keyserver::envelope::Version::default(), keyserver::envelope::Version::V2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Version {
    /// Version 1: a random salt and nonce, and so a key derivation, per
    /// message; no key commitment. Still read by every release (data
    /// written as v1 opens forever), written only when asked for.
    V1,
    /// Version 2, the default: a session per DEK, counter nonces, and a
    /// commitment to the DEK in the header (a message opens under one key
    /// only). About twice as fast for small messages.
    #[default]
    V2,
}
/// Length of the random HKDF salt.
pub const SALT_LEN: usize = 32;
/// Length of the header (authenticated, in clear).
pub const HEADER_LEN: usize = 3 + 1 + 1 + KeyId::LEN + SALT_LEN + GCM_NONCE_LEN;
/// Bytes an envelope adds to the plaintext.
pub const OVERHEAD: usize = HEADER_LEN + GCM_TAG_LEN;
/// Largest plaintext AES-GCM allows under one key (SP 800-38D: 2^39 - 256 bits).
pub const MAX_PLAINTEXT: u64 = crate::crypto::GCM_MAX_PLAINTEXT;
const HKDF_INFO: &[u8] = b"keyserver envelope v1";

/// The clear header of an envelope.
///
/// ```
/// # {
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
    /// The random HKDF salt (in version 2, the session's).
    pub salt: [u8; SALT_LEN],
    /// The AES-GCM nonce: random in version 1; in version 2 the message
    /// number of its session (4 zero bytes, then 8 big-endian).
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
        let overhead = match envelope[3] {
            VERSION => OVERHEAD,
            VERSION_2 => OVERHEAD_V2,
            _ => return Err(malformed("unsupported format version")),
        };
        if envelope.len() < overhead {
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
/// # {
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
    crate::crypto::reserve_wiped(out, OVERHEAD + plaintext.len());
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
    if envelope[3] == VERSION_2 {
        return open_v2_into(suite, dek, context, envelope, &header, out);
    }
    let key = derive_key(suite, dek, &header.salt, HKDF_INFO, envelope[4])?;
    // Header::parse checked that a header and a tag are there.
    let (body, tag) = envelope[HEADER_LEN..].split_at(envelope.len() - OVERHEAD);
    let mut tag_bytes = [0u8; GCM_TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    // Opened straight into `out` where the suite can (no copy first);
    // nothing unauthenticated is left there if authentication fails.
    crate::crypto::reserve_wiped(out, body.len());
    let opened = with_aad(&envelope[..HEADER_LEN], context, |aad| {
        suite.aes_gcm_open_append(&key, &header.nonce, aad, body, &tag_bytes, out)
    });
    if opened.is_err() {
        zeroize::Zeroize::zeroize(out);
    }
    opened
}

/// The format version of an envelope (1 or 2), checking only its first
/// four bytes; a version 2 envelope adds [`OVERHEAD_V2`] bytes to its
/// plaintext, a version 1 envelope [`OVERHEAD`].
///
/// ```
/// assert_eq!(keyserver::envelope::version(b"KSE\x02rest").ok(), Some(2));
/// assert!(keyserver::envelope::version(b"KSE\x03rest").is_err());
/// ```
///
/// # Errors
/// [`Error::MalformedCiphertext`] for a wrong magic or an unknown version.
pub fn version(envelope: &[u8]) -> Result<u8> {
    let malformed = |reason: &'static str| Error::MalformedCiphertext {
        reason: reason.into(),
    };
    if envelope.len() < 4 || &envelope[..3] != ENVELOPE_MAGIC {
        return Err(malformed("not a keyserver ciphertext"));
    }
    match envelope[3] {
        v @ (VERSION | VERSION_2) => Ok(v),
        _ => Err(malformed("unsupported format version")),
    }
}

/// Opens a version 2 envelope under `dek`: its session key is derived
/// for this one message (a reader that opens many messages of one session
/// keeps the [`SessionKey`] instead, as [`KeyClient`](crate::KeyClient)
/// does).
fn open_v2_into<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    context: &[u8],
    envelope: &[u8],
    header: &Header,
    out: &mut Vec<u8>,
) -> Result<()> {
    SessionKey::derive(suite, dek, header.salt)?.open_into(suite, context, envelope, out)
}

/// The keys of one version 2 session of a DEK: the AES-GCM key (with its
/// key schedule set up, where the suite can) and the commitment, both
/// derived from the DEK and the session's salt. A [`Session`] seals with
/// one; a reader that opens many messages of the same session keeps one,
/// so that a message costs one comparison and AES-GCM.
///
/// ```
/// # {
/// use keyserver::{envelope, Dek, KeyId};
/// use keyserver::backends::RustCrypto;
///
/// let (suite, dek, id) = (RustCrypto::new(), Dek::from_bytes(&[1; 16])?, KeyId::from_bytes([2; 32]));
/// let session = envelope::Session::new(&suite, &id, &dek)?;
/// let mut sealed = Vec::new();
/// session.seal_into(&suite, b"", b"hello", &mut sealed)?;
///
/// let salt = envelope::Header::parse(&sealed)?.salt;
/// let reader = envelope::SessionKey::derive(&suite, &dek, salt)?;
/// assert!(reader.is_for(&sealed));
/// let mut opened = Vec::new();
/// reader.open_into(&suite, b"", &sealed, &mut opened)?;
/// assert_eq!(opened, b"hello");
/// # }
/// # Ok::<(), keyserver::Error>(())
/// ```
pub struct SessionKey {
    salt: [u8; SALT_LEN],
    alg: u8,
    commitment: [u8; COMMITMENT_LEN],
    key: AesKey,
}

/// A session's AES-GCM key: the suite's prepared form where it has one
/// (then the raw bytes are not kept), else the bytes, wiped on drop.
enum AesKey {
    Prepared(Box<dyn GcmKey>),
    Raw(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKey")
            .field("alg", &self.alg)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl SessionKey {
    /// Derives the keys of the session `salt` of `dek`.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the key derivation fails; the suite's errors
    /// preparing the key.
    pub fn derive<C: CipherSuite + ?Sized>(
        suite: &C,
        dek: &Dek,
        salt: [u8; SALT_LEN],
    ) -> Result<Self> {
        let alg = dek_alg_id(dek.strength());
        let key = derive_key(suite, dek, &salt, KEY_INFO_V2, alg)?;
        let derived = derive(suite, dek, &salt, COMMITMENT_INFO_V2, alg, COMMITMENT_LEN)?;
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(&derived);
        let key = match suite.aes_gcm_prepare(&key)? {
            Some(prepared) => AesKey::Prepared(prepared),
            None => AesKey::Raw(key),
        };
        Ok(SessionKey {
            salt,
            alg,
            commitment,
            key,
        })
    }

    /// The session's salt.
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// Whether `envelope` is a version 2 envelope of this session (its
    /// version, algorithm and salt; nothing is authenticated yet).
    pub fn is_for(&self, envelope: &[u8]) -> bool {
        envelope.len() >= HEADER_LEN
            && envelope[3] == VERSION_2
            && envelope[4] == self.alg
            && envelope[37..69] == self.salt
    }

    /// Opens a version 2 envelope of this session into `out` (cleared
    /// first): the commitment is compared first, then AES-GCM runs over
    /// the header, `context` and the ciphertext. On failure `out` is left
    /// empty and nothing unauthenticated reaches it.
    ///
    /// # Errors
    /// [`Error::MalformedCiphertext`] for an envelope that does not parse;
    /// [`Error::DecryptionFailed`] for one of another session or DEK, a
    /// different context, or any changed byte.
    pub fn open_into<C: CipherSuite + ?Sized>(
        &self,
        suite: &C,
        context: &[u8],
        envelope: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        let header = Header::parse(envelope)?;
        if !self.is_for(envelope) || !equal(&self.commitment, &envelope[HEADER_LEN..HEADER_LEN_V2])
        {
            return Err(Error::DecryptionFailed);
        }
        let (body, tag) = envelope[HEADER_LEN_V2..].split_at(envelope.len() - OVERHEAD_V2);
        let mut tag_bytes = [0u8; GCM_TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        crate::crypto::reserve_wiped(out, body.len());
        let opened = with_aad(&envelope[..HEADER_LEN_V2], context, |aad| match &self.key {
            AesKey::Prepared(key) => key.open_append(&header.nonce, aad, body, &tag_bytes, out),
            AesKey::Raw(key) => {
                suite.aes_gcm_open_append(key, &header.nonce, aad, body, &tag_bytes, out)
            }
        });
        if opened.is_err() {
            zeroize::Zeroize::zeroize(out);
        }
        opened
    }

    fn seal_append<C: CipherSuite + ?Sized>(
        &self,
        suite: &C,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        match &self.key {
            AesKey::Prepared(key) => key.seal_append(nonce, aad, plaintext, out),
            AesKey::Raw(key) => suite.aes_gcm_seal_append(key, nonce, aad, plaintext, out),
        }
    }
}

/// Whether two byte strings are equal, in time that depends on their
/// lengths only.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A version 2 writer for one DEK: the session key and its AES key
/// schedule, derived once, and the message counter that numbers the nonces.
///
/// Shared between threads (`Arc<Session>`): each message takes the next
/// number atomically, so no two messages of a session ever share a nonce.
/// A session is *spent*, and seals nothing more, after
/// [`SESSION_MAX_MESSAGES`] messages or [`SESSION_MAX_BLOCKS`] blocks, and
/// in a process forked from the one that made it (the child would otherwise
/// continue its parent's counter under the same key): start a new one, with
/// a new random salt. [`KeyClient`](crate::KeyClient) does that by itself.
///
/// ```
/// # {
/// use keyserver::{envelope, Dek, KeyId};
/// use keyserver::backends::RustCrypto;
///
/// let (suite, dek, id) = (RustCrypto::new(), Dek::from_bytes(&[1; 16])?, KeyId::from_bytes([2; 32]));
/// let session = envelope::Session::new(&suite, &id, &dek)?;
/// let (mut sealed, mut opened) = (Vec::new(), Vec::new());
/// for message in [&b"one"[..], b"two", b"three"] {
///     session.seal_into(&suite, b"ctx", message, &mut sealed)?;
///     assert_eq!(sealed[3], envelope::VERSION_2);
///     envelope::open_into(&suite, &dek, b"ctx", &sealed, &mut opened)?;
///     assert_eq!(opened, message);
/// }
/// assert_eq!(session.sealed(), 3);
/// # }
/// # Ok::<(), keyserver::Error>(())
/// ```
pub struct Session {
    key_id: KeyId,
    strength: Strength,
    /// The header with a zero nonce: each message writes its number in.
    header: [u8; HEADER_LEN_V2],
    key: std::sync::Arc<SessionKey>,
    messages: AtomicU64,
    blocks: AtomicU64,
    born: fork::Stamp,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key_id", &self.key_id)
            .field("strength", &self.strength)
            .field("sealed", &self.sealed())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Session {
    /// A new session for `dek` (of the KEK `key_id`), with a random salt
    /// from the suite's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the random number generator or the key
    /// derivation fails.
    pub fn new<C: CipherSuite + ?Sized>(suite: &C, key_id: &KeyId, dek: &Dek) -> Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        suite.fill_random(&mut salt)?;
        Self::with_salt_and_counter(suite, key_id, dek, salt, 0)
    }

    /// A session with a caller-chosen salt whose next message is number
    /// `counter`: deterministic, for known-answer tests only. Two sessions
    /// with the same DEK and salt repeat nonces; use [`Session::new`].
    ///
    /// # Errors
    /// As for [`Session::new`]; [`Error::Policy`] for a `counter` above
    /// [`SESSION_MAX_MESSAGES`].
    pub fn with_salt_and_counter<C: CipherSuite + ?Sized>(
        suite: &C,
        key_id: &KeyId,
        dek: &Dek,
        salt: [u8; SALT_LEN],
        counter: u64,
    ) -> Result<Self> {
        if counter > SESSION_MAX_MESSAGES {
            return Err(Error::policy(
                "an envelope session numbers its messages below 2^32",
            ));
        }
        let key = std::sync::Arc::new(SessionKey::derive(suite, dek, salt)?);
        let mut header = [0u8; HEADER_LEN_V2];
        header[..3].copy_from_slice(ENVELOPE_MAGIC);
        header[3] = VERSION_2;
        header[4] = key.alg;
        header[5..37].copy_from_slice(key_id.as_bytes());
        header[37..69].copy_from_slice(&salt);
        header[HEADER_LEN..].copy_from_slice(&key.commitment);
        Ok(Session {
            key_id: *key_id,
            strength: dek.strength(),
            header,
            key,
            messages: AtomicU64::new(counter),
            blocks: AtomicU64::new(0),
            born: fork::Stamp::now(),
        })
    }

    /// The key id of the KEK whose DEK this session seals under.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The strength of the session's DEK.
    pub fn strength(&self) -> Strength {
        self.strength
    }

    /// The session's keys, which also open its messages.
    pub fn key(&self) -> &std::sync::Arc<SessionKey> {
        &self.key
    }

    /// Message numbers taken so far (including the first `counter` of
    /// [`Session::with_salt_and_counter`]).
    pub fn sealed(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Spends the session as its message limit would (tests of the code
    /// that renews sessions).
    #[cfg(test)]
    pub(crate) fn exhaust(&self) {
        self.messages.store(SESSION_MAX_MESSAGES, Ordering::Relaxed);
    }

    /// Whether the session seals no more: its message or block limit is
    /// reached, or this is a forked child of the process that made it.
    pub fn is_spent(&self) -> bool {
        !self.born.is_current()
            || self.messages.load(Ordering::Relaxed) >= SESSION_MAX_MESSAGES
            || self.blocks.load(Ordering::Relaxed) >= SESSION_MAX_BLOCKS
    }

    /// Seals `plaintext` as a version 2 envelope into `out` (cleared
    /// first; its capacity reused), binding `context` as associated data.
    /// `suite` is used only when it gave no prepared key (then it must be
    /// the suite the session was made with or one giving the same bytes, as
    /// every suite does).
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_PLAINTEXT`]; [`Error::Policy`] once
    /// the session is spent (see [`Session`]); the suite's errors. On
    /// failure `out` is left empty.
    pub fn seal_into<C: CipherSuite + ?Sized>(
        &self,
        suite: &C,
        context: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.try_seal_into(suite, context, plaintext, out)
            .unwrap_or_else(|| {
                Err(Error::policy(
                    "envelope session spent (message or byte limit, or a forked process): start a new one",
                ))
            })
    }

    /// [`Session::seal_into`], or `None` when the session is spent (then
    /// `out` is empty and nothing was sealed).
    pub(crate) fn try_seal_into<C: CipherSuite + ?Sized>(
        &self,
        suite: &C,
        context: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Result<()>> {
        out.clear();
        let len = plaintext.len() as u64;
        if len > MAX_PLAINTEXT {
            return Some(Err(Error::TooLarge {
                size: len,
                limit: MAX_PLAINTEXT,
            }));
        }
        if !self.born.is_current() {
            return None;
        }
        // Each message takes its own number and its share of the block
        // budget atomically: concurrent callers never share a nonce. A
        // number taken by a message refused here is simply never used.
        let number = self.messages.fetch_add(1, Ordering::Relaxed);
        if number >= SESSION_MAX_MESSAGES {
            return None;
        }
        let blocks = len.div_ceil(16) + 1;
        if self.blocks.fetch_add(blocks, Ordering::Relaxed) + blocks > SESSION_MAX_BLOCKS {
            return None;
        }
        let mut nonce = [0u8; GCM_NONCE_LEN];
        nonce[4..].copy_from_slice(&number.to_be_bytes());
        let mut header = self.header;
        header[69..HEADER_LEN].copy_from_slice(&nonce);
        crate::crypto::reserve_wiped(out, OVERHEAD_V2 + plaintext.len());
        out.extend_from_slice(&header);
        let sealed = with_aad(&header, context, |aad| {
            self.key.seal_append(suite, &nonce, aad, plaintext, out)
        });
        if sealed.is_err() {
            zeroize::Zeroize::zeroize(out);
        }
        Some(sealed)
    }
}

/// Telling a forked child from the process that made a session.
#[allow(unsafe_code)]
mod fork {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Forks seen by this process: every child increments its copy before
    /// `fork` returns in it (a `pthread_atfork` handler).
    static GENERATION: AtomicU64 = AtomicU64::new(0);

    #[cfg(unix)]
    extern "C" fn in_child() {
        // An atomic increment: async-signal-safe, as a fork handler must be.
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the fork handler is installed (once per process).
    fn hooked() -> bool {
        static HOOKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HOOKED.get_or_init(|| {
            #[cfg(unix)]
            {
                // SAFETY: registers a handler that only increments an
                // atomic; no other state is touched in the child.
                unsafe { libc::pthread_atfork(None, None, Some(in_child)) == 0 }
            }
            #[cfg(not(unix))]
            {
                false
            }
        })
    }

    /// The process a session was made in.
    #[derive(Debug)]
    pub(super) struct Stamp {
        generation: u64,
        /// Compared on every message only where the fork handler could not
        /// be installed (a process id is reused, a fork count is not).
        pid: Option<u32>,
    }

    impl Stamp {
        pub(super) fn now() -> Self {
            let hooked = hooked();
            Stamp {
                generation: GENERATION.load(Ordering::Relaxed),
                pid: (!hooked).then(std::process::id),
            }
        }

        pub(super) fn is_current(&self) -> bool {
            GENERATION.load(Ordering::Relaxed) == self.generation
                && self.pid.is_none_or(|pid| pid == std::process::id())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backends::RustCrypto;

    fn session() -> (RustCrypto, Dek, Session) {
        let suite = RustCrypto::new();
        let dek = Dek::from_bytes(&[4; 16]).unwrap();
        let session = Session::new(&suite, &KeyId::from_bytes([1; 32]), &dek).unwrap();
        (suite, dek, session)
    }

    #[test]
    fn the_block_budget_ends_a_session() {
        let (suite, dek, session) = session();
        // A 16-byte message counts two blocks (its own and the tag's mask).
        session
            .blocks
            .store(SESSION_MAX_BLOCKS - 2, Ordering::Relaxed);
        let mut out = Vec::new();
        session.seal_into(&suite, b"", &[7; 16], &mut out).unwrap();
        assert_eq!(&open(&suite, &dek, b"", &out).unwrap()[..], &[7; 16]);
        assert!(session.is_spent());
        assert!(session.try_seal_into(&suite, b"", b"", &mut out).is_none());
        assert!(out.is_empty());
    }

    #[test]
    fn a_message_past_the_block_budget_is_refused_whole() {
        let (suite, _, session) = session();
        session
            .blocks
            .store(SESSION_MAX_BLOCKS - 2, Ordering::Relaxed);
        let mut out = Vec::new();
        // 17 bytes are three blocks: one more than is left.
        assert!(session
            .try_seal_into(&suite, b"", &[7; 17], &mut out)
            .is_none());
        assert!(out.is_empty());
    }

    #[test]
    fn the_debug_form_shows_no_key() {
        let (_, _, session) = session();
        let shown = format!("{session:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let AesKey::Raw(raw) = &session.key.key else {
            panic!("RustCrypto keeps the raw key")
        };
        let key = format!("{:?}", &raw[..]);
        assert!(!shown.contains(&key), "{shown}");
        let shown = format!("{:?}", session.key());
        assert!(
            shown.contains("<redacted>") && !shown.contains(&key),
            "{shown}"
        );
    }

    /// A forked child must not continue its parent's counter under the same
    /// session key: there the session is spent and seals nothing.
    #[cfg(unix)]
    #[test]
    #[allow(unsafe_code)]
    fn a_forked_child_seals_nothing_with_its_parents_session() {
        let (suite, _, session) = session();
        let mut out = Vec::new();
        session.seal_into(&suite, b"", b"parent", &mut out).unwrap();
        out = Vec::new(); // no allocation is needed in the child
                          // SAFETY: the child only reads atomics, then leaves with _exit
                          // (async-signal-safe; no allocation, no lock).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // Were detection broken, sealing would allocate in a forked
            // copy of a multi-threaded process (and might hang): it is
            // tried only once the session says it is spent.
            let spent = session.is_spent();
            let refused = spent && session.try_seal_into(&suite, b"", b"", &mut out).is_none();
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if spent && refused { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "the child used the session");
        // The parent's session goes on.
        assert!(!session.is_spent());
        session
            .seal_into(&suite, b"", b"parent again", &mut out)
            .unwrap();
        assert_eq!(session.sealed(), 2);
    }
}
