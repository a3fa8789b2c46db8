//! AES-GCM: the one data cipher of every format ([`Aead`]), and the
//! prepared key ([`GcmKey`]) a session keeps.

use zeroize::{Zeroize, Zeroizing};

use crate::Result;

/// Length of an AES-GCM nonce in bytes.
pub const GCM_NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag in bytes.
pub const GCM_TAG_LEN: usize = 16;
/// Longest plaintext one AES-GCM operation may take (SP 800-38D: 2^39 - 256
/// bits).
pub const GCM_MAX_PLAINTEXT: u64 = (1 << 36) - 32;

/// An AES-GCM key with its key schedule set up once, for many messages
/// under the same key: what [`Aead::aes_gcm_prepare`] returns. Its
/// methods behave exactly as
/// [`Aead::aes_gcm_seal_append`] and
/// [`Aead::aes_gcm_open_append`] with the key it was made from, and
/// it wipes the key schedule when dropped.
///
/// It is shared between threads (an envelope v2 session seals from many at
/// once), so an implementation's methods take `&self` and keep no
/// per-message state in it.
pub trait GcmKey: Send + Sync {
    /// As [`Aead::aes_gcm_seal_append`] with this key.
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

    /// As [`Aead::aes_gcm_open_append`] with this key.
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
/// AES-GCM (SP 800-38D) with a 16, 24 or 32-byte key, a 12-byte nonce and
/// a 16-byte tag: the cipher of the envelope, stream and record formats.
///
/// Two methods are required, sealing and opening in place; the others are
/// provided on top of them, and a library that can do better (encrypt from
/// one buffer into another, keep a key schedule) overrides them.
///
/// # Errors
/// [`Error::InvalidKey`](crate::Error::InvalidKey) for a key of another
/// length, [`Error::DecryptionFailed`](crate::Error::DecryptionFailed)
/// when an open fails authentication, [`Error::Crypto`](crate::Error::Crypto)
/// when the primitive itself fails. Errors never contain key material.
///
/// # Example
///
/// ```
/// # {
/// use keyserver::crypto::Aead;
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
pub trait Aead: Send + Sync {
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
    /// [`aes_gcm_seal_in_place`](Aead::aes_gcm_seal_in_place) (a copy,
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
    /// [`aes_gcm_open_in_place`](Aead::aes_gcm_open_in_place) (a copy,
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
    /// [`aes_gcm_seal_append`](Aead::aes_gcm_seal_append) for every
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
    /// [`aes_gcm_seal_in_place`](Aead::aes_gcm_seal_in_place).
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
    /// [`aes_gcm_open_in_place`](Aead::aes_gcm_open_in_place).
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
}

/// A boxed AES-GCM is an AES-GCM, so `Box<dyn CipherSuite>` is a suite.
impl<T: Aead + ?Sized> Aead for Box<T> {
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
}
