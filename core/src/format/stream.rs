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
//! # {
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

use crate::crypto::{CipherSuite, GCM_NONCE_LEN, GCM_TAG_LEN};
use crate::format::{dek_alg_id, derive_key, strength_of_alg_id, STREAM_MAGIC};
use crate::{Dek, Error, KeyId, Result, Strength};

/// The first bytes of every stream, `KSS`.
pub const MAGIC: &[u8; 3] = STREAM_MAGIC;
/// The stream format version this crate writes.
pub const VERSION: u8 = 1;
/// Length of the stream header.
pub const HEADER_LEN: usize = 80;
/// Default plaintext bytes per chunk: 64 KiB.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
/// Largest chunk size a reader accepts (bounds its memory: four chunk
/// buffers at most, see `pipeline`).
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

/// Batches handed to the sealing (or opening) thread and not yet back. With
/// two, the reading and the sealing thread kept waiting for each other (a
/// stream ran at about 0.7x of `dd` reading the same file); with three,
/// at 0.8–1.0x (BENCHMARKS.md, issue 18).
const IN_FLIGHT: usize = 3;

/// Chunks are handed over in batches of about this many bytes (at least
/// one chunk): one hand-over between threads per 64 KiB chunk would cost
/// more than it overlaps.
const BATCH_BYTES: usize = 1 << 20;

/// A chunk of a batch: its buffer, the bytes read into it, its index,
/// whether it is the last, and (once transformed) the bytes to write.
struct Chunk {
    buf: Zeroizing<Vec<u8>>,
    len: usize,
    index: u32,
    last: bool,
    out: usize,
}

/// Reads chunks with `read` on this thread, runs `transform` (seal or open
/// in place, returning the length to write) on a second thread, and writes
/// the results in order on this one: reading overlaps sealing. A chunk of
/// `full` bytes may have a successor, so each is read ahead of the one
/// before being handed over (the last chunk's nonce differs). Nothing of a
/// chunk that failed, nor anything after it, is written. Memory: at most
/// `IN_FLIGHT` batches and one chunk (with chunks of 1 MiB or more, a batch
/// is one chunk: four chunk buffers, 64 MiB at the largest chunk size).
/// Returns the bytes read and
/// written in chunks; `overflow` is the error past 2^32 chunks, given the
/// bytes read.
fn pipeline<R, W, T, O>(
    mut read: R,
    output: &mut W,
    full: usize,
    transform: T,
    overflow: O,
) -> Result<(u64, u64)>
where
    R: FnMut(&mut Zeroizing<Vec<u8>>) -> Result<usize>,
    W: Write,
    T: Fn(&mut Zeroizing<Vec<u8>>, usize, u32, bool) -> Result<usize> + Sync,
    O: Fn(u64) -> Error,
{
    let mut current = Zeroizing::new(Vec::new());
    let mut len = read(&mut current)?;
    if len < full {
        // A stream of one chunk: no second thread.
        let out = transform(&mut current, len, 0, true)?;
        output
            .write_all(&current[..out])
            .map_err(|e| io_error("writing output", e))?;
        return Ok((len as u64, out as u64));
    }
    let transform = &transform;
    let per_batch = (BATCH_BYTES / full.max(1)).max(1);
    std::thread::scope(|scope| {
        let (to_worker, jobs) = std::sync::mpsc::sync_channel::<Vec<Chunk>>(IN_FLIGHT);
        let (to_main, done) =
            std::sync::mpsc::sync_channel::<(Vec<Chunk>, Result<()>)>(IN_FLIGHT + 1);
        let worker = std::thread::Builder::new().name("keyserver-stream".into());
        let spawned = worker.spawn_scoped(scope, move || {
            for mut batch in jobs {
                let mut result = Ok(());
                for i in 0..batch.len() {
                    let chunk = &mut batch[i];
                    match transform(&mut chunk.buf, chunk.len, chunk.index, chunk.last) {
                        Ok(out) => chunk.out = out,
                        Err(e) => {
                            // The chunks before it are written; it and
                            // those after it are not (wiped on drop).
                            batch.truncate(i);
                            result = Err(e);
                            break;
                        }
                    }
                }
                let failed = result.is_err();
                if to_main.send((batch, result)).is_err() || failed {
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            // No thread to be had (a process or container limit): a typed
            // error, not a panic.
            return Err(io_error("starting the stream's sealing thread", e));
        }
        let mut written = 0u64;
        // The next batch, in order, written out; its buffers come back.
        let mut receive = |written: &mut u64| -> Result<Vec<Zeroizing<Vec<u8>>>> {
            let (batch, result) = done
                .recv()
                .map_err(|_| Error::Internal("the stream worker stopped".into()))?;
            let mut buffers = Vec::with_capacity(batch.len());
            for chunk in batch {
                output
                    .write_all(&chunk.buf[..chunk.out])
                    .map_err(|e| io_error("writing output", e))?;
                *written += chunk.out as u64;
                buffers.push(chunk.buf);
            }
            result.map(|()| buffers)
        };
        let mut in_flight = 0usize;
        let mut index: u32 = 0;
        let mut total = 0u64;
        let mut ended = false;
        while !ended {
            // Buffers back from the worker (their chunks written), or,
            // while fewer than IN_FLIGHT batches are out, new ones.
            let mut spare = if in_flight >= IN_FLIGHT {
                in_flight -= 1;
                receive(&mut written)?
            } else {
                Vec::new()
            };
            let mut batch = Vec::with_capacity(per_batch);
            while batch.len() < per_batch {
                let mut next = spare.pop().unwrap_or_default();
                let next_len = if len == full { read(&mut next)? } else { 0 };
                let last = next_len == 0;
                total += len as u64;
                let chunk = std::mem::replace(&mut current, next);
                batch.push(Chunk {
                    buf: chunk,
                    len,
                    index,
                    last,
                    out: 0,
                });
                if last {
                    ended = true;
                    break;
                }
                index = index.checked_add(1).ok_or_else(|| overflow(total))?;
                len = next_len;
            }
            if to_worker.send(batch).is_err() {
                // The worker stopped at a failure: report it.
                loop {
                    receive(&mut written)?;
                }
            }
            in_flight += 1;
        }
        drop(to_worker);
        for _ in 0..in_flight {
            receive(&mut written)?;
        }
        Ok((total, written))
    })
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
    // From the OS CSPRNG itself, not the suite's generator: a stream draws
    // once, and a suite whose generator is a DRBG seeded on first use (AWS-LC
    // gathers CPU-jitter entropy for it: about 50 ms of CPU) made that one
    // draw the largest cost of `keyserver encrypt` on a small file, and a
    // sixth of its time on 1 GiB.
    getrandom::fill(&mut random).map_err(|_| Error::Crypto {
        suite: suite.name(),
        operation: "random number generator",
    })?;
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
    let seal = |buf: &mut Zeroizing<Vec<u8>>, len: usize, index: u32, last: bool| {
        let tag = suite.aes_gcm_seal_in_place(
            &key,
            &nonce(&header.prefix, index, last),
            &head,
            &mut buf[..len],
        )?;
        buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
        Ok(len + GCM_TAG_LEN)
    };
    let read = |buf: &mut Zeroizing<Vec<u8>>| {
        // Each buffer has room for a chunk and its tag: sealed in place and
        // written with one call, allocated once.
        if buf.len() < size + GCM_TAG_LEN {
            *buf = Zeroizing::new(vec![0u8; size + GCM_TAG_LEN]);
        }
        read_full(&mut input, &mut buf[..size])
    };
    let limit = u64::from(u32::MAX) * u64::from(header.chunk);
    let (total, _) = pipeline(read, &mut output, size, seal, |total| Error::TooLarge {
        size: total,
        limit,
    })?;
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
    let open = |buf: &mut Zeroizing<Vec<u8>>, len: usize, index: u32, last: bool| {
        if len < GCM_TAG_LEN {
            // Not even a tag: the final chunk is missing.
            return Err(Error::DecryptionFailed);
        }
        let body_len = len - GCM_TAG_LEN;
        let (body, rest) = buf.split_at_mut(body_len);
        let mut tag = [0u8; GCM_TAG_LEN];
        tag.copy_from_slice(&rest[..GCM_TAG_LEN]);
        suite.aes_gcm_open_in_place(
            &key,
            &nonce(&header.prefix, index, last),
            &head,
            body,
            &tag,
        )?;
        Ok(body_len)
    };
    // Chunks are opened in place, so the buffers hold plaintext: wiped on
    // drop. They grow as the input arrives (see `read_chunk`).
    let read = |buf: &mut Zeroizing<Vec<u8>>| read_chunk(&mut input, buf, size);
    let (_, total) = pipeline(read, &mut output, size, open, |_| Error::DecryptionFailed)?;
    output.flush().map_err(|e| io_error("writing output", e))?;
    Ok(total)
}

/// Decrypts a stream whose `header` was read from `input` under `old` and
/// encrypts its plaintext under `new` (for `new_key_id`, with a fresh salt
/// and nonce prefix) to `output`, in one pass: the plaintext exists only in
/// memory, a few chunks at a time, and is wiped. For rekeying data after a
/// compromise (a rotated KEK wraps the same DEK, which a compromised KEK
/// has exposed). Returns the plaintext length.
///
/// The new stream is finished only once the old one has verified to its
/// end: if any chunk of the old stream fails (tampering, truncation),
/// `output` never gets a final chunk, so what was written cannot be read
/// as a shorter valid stream. Still, write to a temporary file and keep it
/// only on success.
///
/// # Errors
/// As for [`decrypt_after_header`] (the old stream's errors come first) and
/// [`encrypt`].
pub fn reencrypt<C: CipherSuite + ?Sized + Sync>(
    suite: &C,
    old: &Dek,
    header: &StreamHeader,
    input: impl Read + Send,
    new_key_id: &KeyId,
    new: &Dek,
    output: impl Write + Send,
) -> Result<u64> {
    let (writer, reader) = plaintext_pipe();
    std::thread::scope(|scope| {
        let opening = scope.spawn(move || {
            let mut writer = writer;
            let opened = decrypt_after_header(suite, old, header, input, &mut writer)?;
            writer.finish()?;
            Ok::<u64, Error>(opened)
        });
        let sealed = encrypt(suite, new_key_id, new, reader, output);
        let opened = opening
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the decrypting thread panicked".into())));
        // The old stream's failure is the cause of any failure of the new.
        let opened = opened?;
        let sealed = sealed?;
        if opened != sealed {
            return Err(Error::Internal(
                "re-encryption sealed another length than it opened".into(),
            ));
        }
        Ok(sealed)
    })
}

/// Chunks of plaintext in flight between the two halves of [`reencrypt`].
const PIPE_DEPTH: usize = 4;

/// A bounded in-memory pipe of wiped buffers whose reader sees the end only
/// when the writer says the data is complete ([`PipeWriter::finish`]); a
/// writer dropped without it is an error to the reader, never an end.
fn plaintext_pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(PIPE_DEPTH);
    (
        PipeWriter {
            tx,
            buf: Zeroizing::new(Vec::with_capacity(DEFAULT_CHUNK as usize)),
        },
        PipeReader {
            rx,
            current: Zeroizing::new(Vec::new()),
            at: 0,
            done: false,
        },
    )
}

/// What travels through the pipe: bytes, or the end of complete data.
enum Piece {
    Bytes(Zeroizing<Vec<u8>>),
    End,
}

struct PipeWriter {
    tx: std::sync::mpsc::SyncSender<Piece>,
    buf: Zeroizing<Vec<u8>>,
}

impl PipeWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(
            &mut self.buf,
            Zeroizing::new(Vec::with_capacity(DEFAULT_CHUNK as usize)),
        );
        self.tx
            .send(Piece::Bytes(full))
            .map_err(|_| std::io::Error::new(ErrorKind::BrokenPipe, "the encrypting side stopped"))
    }

    /// Says the data is complete: the reader may now see its end.
    fn finish(mut self) -> Result<()> {
        self.send()
            .and_then(|()| {
                self.tx.send(Piece::End).map_err(|_| {
                    std::io::Error::new(ErrorKind::BrokenPipe, "the encrypting side stopped")
                })
            })
            .map_err(|e| io_error("writing output", e))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() == self.buf.capacity() {
            self.send()?;
        }
        // Within the capacity: the buffer never moves (and leaves no
        // unwiped copy behind).
        let n = data.len().min(self.buf.capacity() - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The end of the data is said by `finish` only.
        Ok(())
    }
}

struct PipeReader {
    rx: std::sync::mpsc::Receiver<Piece>,
    current: Zeroizing<Vec<u8>>,
    at: usize,
    done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Bytes(bytes)) => {
                    self.current = bytes;
                    self.at = 0;
                }
                Ok(Piece::End) => self.done = true,
                Err(_) => {
                    return Err(std::io::Error::other(
                        "the stream being re-encrypted did not verify to its end",
                    ))
                }
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backends::RustCrypto;

    fn dek(byte: u8) -> Dek {
        Dek::from_bytes(&[byte; 32]).unwrap()
    }

    fn sealed(suite: &RustCrypto, id: &KeyId, dek: &Dek, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encrypt(suite, id, dek, plaintext, &mut out).unwrap();
        out
    }

    fn rekey(suite: &RustCrypto, old: &Dek, input: &[u8], new: &Dek) -> (Result<u64>, Vec<u8>) {
        let mut input = input;
        let header = StreamHeader::read_from(&mut input).unwrap();
        let mut out = Vec::new();
        let result = reencrypt(
            suite,
            old,
            &header,
            input,
            &KeyId::from_bytes([2; 32]),
            new,
            &mut out,
        );
        (result, out)
    }

    #[test]
    fn a_stream_rekeyed_opens_under_the_new_key_only() {
        let suite = RustCrypto::new();
        let old_id = KeyId::from_bytes([1; 32]);
        // Empty, one byte, a chunk exactly, and several chunks and a part.
        for len in [
            0usize,
            1,
            DEFAULT_CHUNK as usize,
            3 * DEFAULT_CHUNK as usize + 17,
        ] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let old_stream = sealed(&suite, &old_id, &dek(1), &plaintext);
            let (result, new_stream) = rekey(&suite, &dek(1), &old_stream, &dek(9));
            assert_eq!(result.unwrap(), len as u64);
            let mut reader = &new_stream[..];
            let header = StreamHeader::read_from(&mut reader).unwrap();
            assert_eq!(header.key_id, KeyId::from_bytes([2; 32]));
            let mut opened = Vec::new();
            decrypt(&suite, &dek(9), &new_stream[..], &mut opened).unwrap();
            assert_eq!(opened, plaintext, "{len}");
            let mut wrong = Vec::new();
            assert!(decrypt(&suite, &dek(1), &new_stream[..], &mut wrong).is_err());
        }
    }

    /// A tampered or truncated source fails with its own error, and what
    /// was written of the new stream is never a valid shorter stream.
    #[test]
    fn a_bad_source_never_gives_a_valid_shorter_stream() {
        let suite = RustCrypto::new();
        let old_id = KeyId::from_bytes([1; 32]);
        let plaintext = vec![7u8; 5 * DEFAULT_CHUNK as usize];
        let good = sealed(&suite, &old_id, &dek(1), &plaintext);
        let mut flipped = good.clone();
        let at = good.len() - 100;
        flipped[at] ^= 1;
        let cut = good[..good.len() - DEFAULT_CHUNK as usize].to_vec();
        for (what, bad) in [("a flipped bit", flipped), ("a cut stream", cut)] {
            let (result, partial) = rekey(&suite, &dek(1), &bad, &dek(9));
            assert!(
                matches!(result, Err(Error::DecryptionFailed)),
                "{what}: {result:?}"
            );
            let mut opened = Vec::new();
            assert!(
                decrypt(&suite, &dek(9), &partial[..], &mut opened).is_err(),
                "{what}: the partial output opened as a stream"
            );
        }
        // The wrong old key: nothing opens.
        let (result, _) = rekey(&suite, &dek(3), &good, &dek(9));
        assert!(matches!(result, Err(Error::DecryptionFailed)));
    }
}
