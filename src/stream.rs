//! Streaming encryption ("stream" format v1): data of any size in bounded
//! memory, every chunk authenticated, reordering, truncation and appended data
//! detected.
//!
//! Owned by the core like [`envelope`](crate::envelope), so every suite
//! writes the same bytes. It is the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway, Vizár 2015) on AES-GCM: chunk `i` is sealed with the nonce
//! `prefix (7 bytes) || i (4 bytes, big-endian) || last (1 byte: 1 for the
//! final chunk, else 0)` under a per-stream key derived with HKDF-SHA256, and
//! the header is authenticated with every chunk.
//!
//! ```text
//! offset  size  field
//!      0     3  magic "KSS"
//!      3     1  format version = 1
//!      4     1  algorithm: 1/2/3 = HKDF-SHA256 + AES-128/192/256-GCM
//!      5    32  key id of the KEK whose DEK sealed the stream
//!     37    32  salt (random)
//!     69     7  nonce prefix (random)
//!     76     4  chunk size C in bytes (plaintext per chunk), 1 ..= 16 MiB
//!     80        chunks: each C bytes of ciphertext + 16-byte tag, the last
//!               one 0 ..= C bytes + tag
//! ```
//!
//! Per-stream key: `HKDF-SHA256(ikm = DEK, salt = salt,
//! info = "keyserver stream v1" || algorithm)`. Chunk AAD: the 80-byte header.
//! A stream always ends with a chunk flagged last, possibly empty.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "cipher-rustcrypto")] {
//! use keyserver::{stream, Dek, KeyId};
//! use keyserver::backends::RustCrypto;
//!
//! let suite = RustCrypto::new();
//! let dek = Dek::from_bytes(&[7; 16])?;
//! let id = KeyId::from_bytes([1; 32]);
//! let data = vec![42u8; 200_000];
//! let mut sealed = Vec::new();
//! stream::encrypt(&suite, &id, &dek, &data[..], &mut sealed)?;
//! let mut opened = Vec::new();
//! stream::decrypt(&suite, &dek, &sealed[..], &mut opened)?;
//! assert_eq!(opened, data);
//!
//! sealed.truncate(sealed.len() - 1);
//! assert!(stream::decrypt(&suite, &dek, &sealed[..], &mut Vec::new()).is_err());
//! # }
//! # Ok::<(), keyserver::Error>(())
//! ```

use std::io::{ErrorKind, Read, Write};

use zeroize::Zeroizing;

use crate::format::{dek_alg_id, derive_key, strength_of_alg_id, STREAM_MAGIC};
use crate::suite::{CipherSuite, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::{Dek, Error, KeyId, Result, Strength};

/// The stream format version this crate writes.
pub const VERSION: u8 = 1;
/// Length of the stream header.
pub const HEADER_LEN: usize = 80;
/// Default plaintext bytes per chunk: 64 KiB.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
/// Largest chunk size a reader accepts (bounds its memory).
pub const MAX_CHUNK: u32 = 16 * 1024 * 1024;
const PREFIX_LEN: usize = 7;
const SALT_LEN: usize = 32;
const HKDF_INFO: &[u8] = b"keyserver stream v1";

/// The clear header of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The strength (AES key size) of the sealing DEK.
    pub strength: Strength,
    /// The key id of the KEK whose DEK sealed the stream.
    pub key_id: KeyId,
    /// The HKDF salt.
    pub salt: [u8; SALT_LEN],
    /// The nonce prefix.
    pub prefix: [u8; PREFIX_LEN],
    /// Plaintext bytes per chunk.
    pub chunk: u32,
}

impl StreamHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..3].copy_from_slice(STREAM_MAGIC);
        h[3] = VERSION;
        h[4] = dek_alg_id(self.strength);
        h[5..37].copy_from_slice(self.key_id.as_bytes());
        h[37..69].copy_from_slice(&self.salt);
        h[69..76].copy_from_slice(&self.prefix);
        h[76..80].copy_from_slice(&self.chunk.to_be_bytes());
        h
    }

    /// Parses a stream header.
    ///
    /// # Errors
    /// [`Error::MalformedCiphertext`] for a wrong magic, unknown version or
    /// algorithm, or a chunk size outside 1 ..= 16 MiB.
    pub fn parse(h: &[u8; HEADER_LEN]) -> Result<Self> {
        let malformed = |reason: &'static str| Error::MalformedCiphertext {
            reason: reason.into(),
        };
        if &h[..3] != STREAM_MAGIC {
            return Err(malformed("not a keyserver stream"));
        }
        if h[3] != VERSION {
            return Err(malformed("unsupported stream version"));
        }
        let strength = strength_of_alg_id(h[4]).ok_or(malformed("unknown algorithm"))?;
        let mut key_id = [0u8; 32];
        key_id.copy_from_slice(&h[5..37]);
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&h[37..69]);
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&h[69..76]);
        let chunk = u32::from_be_bytes([h[76], h[77], h[78], h[79]]);
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(malformed("chunk size outside 1 ..= 16 MiB"));
        }
        Ok(StreamHeader {
            strength,
            key_id: KeyId::from_bytes(key_id),
            salt,
            prefix,
            chunk,
        })
    }

    /// Reads and parses the header at the start of `input`.
    ///
    /// # Errors
    /// As for [`StreamHeader::parse`], and [`Error::MalformedCiphertext`] if
    /// the input is shorter than a header; I/O errors as [`Error::Io`].
    pub fn read_from(input: &mut impl Read) -> Result<Self> {
        let mut h = [0u8; HEADER_LEN];
        if read_full(input, &mut h)? < HEADER_LEN {
            return Err(Error::MalformedCiphertext {
                reason: "truncated: shorter than a stream header".into(),
            });
        }
        Self::parse(&h)
    }
}

fn io_error(what: &'static str, source: std::io::Error) -> Error {
    Error::Io { what, source }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("reading input", e)),
        }
    }
    Ok(filled)
}

/// Reads up to `size` bytes (fewer only at the end of the input) into the
/// front of `buf`, growing it as bytes arrive: a stream that declares 16 MiB
/// chunks and sends a few bytes costs a few bytes, not two 16 MiB buffers.
/// Growing copies into a new buffer and wipes the old one (it may hold the
/// plaintext of an earlier chunk).
fn read_chunk(input: &mut impl Read, buf: &mut Zeroizing<Vec<u8>>, size: usize) -> Result<usize> {
    const FIRST: usize = 64 * 1024;
    let mut filled = 0;
    while filled < size {
        if filled == buf.len() {
            let grown_len = size.min((2 * filled).max(FIRST));
            let mut grown = Zeroizing::new(vec![0u8; grown_len]);
            grown[..filled].copy_from_slice(&buf[..filled]);
            *buf = grown;
        }
        let room = buf.len().min(size);
        match input.read(&mut buf[filled..room]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("reading input", e)),
        }
    }
    Ok(filled)
}

fn nonce(prefix: &[u8; PREFIX_LEN], index: u32, last: bool) -> [u8; GCM_NONCE_LEN] {
    let mut n = [0u8; GCM_NONCE_LEN];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Encrypts all of `input` to `output` with a fresh salt and nonce prefix and
/// the default chunk size; returns the plaintext length.
///
/// # Errors
/// [`Error::TooLarge`] past 2^32 chunks (256 TiB at the default size); I/O
/// errors as [`Error::Io`]; suite errors.
pub fn encrypt<C: CipherSuite + ?Sized>(
    suite: &C,
    key_id: &KeyId,
    dek: &Dek,
    input: impl Read,
    output: impl Write,
) -> Result<u64> {
    let mut random = [0u8; SALT_LEN + PREFIX_LEN];
    suite.fill_random(&mut random)?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&random[..SALT_LEN]);
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&random[SALT_LEN..]);
    let header = StreamHeader {
        strength: dek.strength(),
        key_id: *key_id,
        salt,
        prefix,
        chunk: DEFAULT_CHUNK,
    };
    encrypt_with_header(suite, dek, &header, input, output)
}

/// Encrypts with a caller-chosen header: deterministic, for known-answer
/// tests only. Never reuse a salt and prefix with the same DEK; use
/// [`encrypt`].
///
/// # Errors
/// As for [`encrypt`], and [`Error::InvalidKey`] if the header's strength is
/// not the DEK's.
pub fn encrypt_with_header<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    header: &StreamHeader,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<u64> {
    if header.strength != dek.strength() || header.chunk == 0 || header.chunk > MAX_CHUNK {
        return Err(Error::InvalidKey {
            reason: "stream header does not match the data key".into(),
        });
    }
    let head = header.encode();
    let key = derive_key(suite, dek, &header.salt, HKDF_INFO, head[4])?;
    output
        .write_all(&head)
        .map_err(|e| io_error("writing output", e))?;
    let size = header.chunk as usize;
    // Two chunk buffers (the current one and one read ahead, to know which
    // chunk is the last), each with room for the tag: every chunk is sealed
    // in place and written with one call, without allocating per chunk.
    let mut current = Zeroizing::new(vec![0u8; size + GCM_TAG_LEN]);
    let mut next = Zeroizing::new(vec![0u8; size + GCM_TAG_LEN]);
    let mut len = read_full(&mut input, &mut current[..size])?;
    let mut index: u32 = 0;
    let mut total = 0u64;
    loop {
        let next_len = if len == size {
            read_full(&mut input, &mut next[..size])?
        } else {
            0
        };
        let last = next_len == 0;
        let tag = suite.aes_gcm_seal_in_place(
            &key,
            &nonce(&header.prefix, index, last),
            &head,
            &mut current[..len],
        )?;
        current[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
        output
            .write_all(&current[..len + GCM_TAG_LEN])
            .map_err(|e| io_error("writing output", e))?;
        total += len as u64;
        if last {
            break;
        }
        index = index.checked_add(1).ok_or(Error::TooLarge {
            size: total,
            limit: u64::from(u32::MAX) * u64::from(header.chunk),
        })?;
        std::mem::swap(&mut current, &mut next);
        len = next_len;
    }
    output.flush().map_err(|e| io_error("writing output", e))?;
    Ok(total)
}

/// Decrypts a stream from `input` to `output`, chunk by chunk; returns the
/// plaintext length. Each chunk is authenticated before it is written, so
/// `output` only ever receives authentic data; but if a later chunk fails,
/// what was written before must be discarded by the caller (the command-line
/// tool writes to a temporary file and renames it only on success).
///
/// # Errors
/// [`Error::MalformedCiphertext`] for a header this version cannot read;
/// [`Error::DecryptionFailed`] for a wrong DEK, or any change, reordering,
/// truncation or appended data; I/O errors as [`Error::Io`].
pub fn decrypt<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    mut input: impl Read,
    output: impl Write,
) -> Result<u64> {
    let header = StreamHeader::read_from(&mut input)?;
    decrypt_after_header(suite, dek, &header, input, output)
}

/// Decrypts the chunks that follow an already-read `header` (for callers
/// that read the header first to find the KEK).
///
/// # Errors
/// As for [`decrypt`].
pub fn decrypt_after_header<C: CipherSuite + ?Sized>(
    suite: &C,
    dek: &Dek,
    header: &StreamHeader,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<u64> {
    if header.strength != dek.strength() {
        return Err(Error::DecryptionFailed);
    }
    let head = header.encode();
    let key = derive_key(suite, dek, &header.salt, HKDF_INFO, head[4])?;
    let size = header.chunk as usize + GCM_TAG_LEN;
    // Chunks are opened in place, so these buffers hold plaintext: wiped on
    // drop. They grow as the input arrives (see `read_chunk`).
    let mut current = Zeroizing::new(Vec::new());
    let mut next = Zeroizing::new(Vec::new());
    let mut len = read_chunk(&mut input, &mut current, size)?;
    let mut index: u32 = 0;
    let mut total = 0u64;
    loop {
        if len < GCM_TAG_LEN {
            // Not even a tag: the final chunk is missing.
            return Err(Error::DecryptionFailed);
        }
        let next_len = if len == size {
            read_chunk(&mut input, &mut next, size)?
        } else {
            0
        };
        let last = next_len == 0;
        let body_len = len - GCM_TAG_LEN;
        let (body, rest) = current.split_at_mut(body_len);
        let mut tag = [0u8; GCM_TAG_LEN];
        tag.copy_from_slice(&rest[..GCM_TAG_LEN]);
        suite.aes_gcm_open_in_place(
            &key,
            &nonce(&header.prefix, index, last),
            &head,
            body,
            &tag,
        )?;
        output
            .write_all(body)
            .map_err(|e| io_error("writing output", e))?;
        total += body_len as u64;
        if last {
            break;
        }
        index = index.checked_add(1).ok_or(Error::DecryptionFailed)?;
        std::mem::swap(&mut current, &mut next);
        len = next_len;
    }
    output.flush().map_err(|e| io_error("writing output", e))?;
    Ok(total)
}
