//! The one public error type of the crate.

use std::fmt;

use crate::KeyId;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in keyserver.
///
/// Each variant says what happened. None of them ever carries key material or
/// plaintext: only public identifiers ([`KeyId`]), sizes and fixed reasons. The
/// decryption failure is deliberately opaque (no detail that could serve as an
/// oracle).
///
/// [`Error::code`] gives the stable integer used on the wire (see
/// `docs/PROTOCOL.md`).
///
/// # Example
///
/// ```
/// use keyserver::{Error, KeyId};
///
/// let err: Error = "not a key id".parse::<KeyId>().unwrap_err();
/// assert_eq!(err.code(), 2);
/// assert!(err.to_string().contains("key id"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No wrapped DEK is stored under this key id.
    #[error("key {key_id} not found")]
    NotFound {
        /// The key that was asked for.
        key_id: KeyId,
    },

    /// A key (KEK, DEK) or key id could not be parsed or is not acceptable.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it (never the key itself).
        reason: &'static str,
    },

    /// The KEK given does not open the stored wrapped DEK.
    #[error("the key-encryption key does not unwrap the data key of {key_id}")]
    UnwrapFailed {
        /// The key id the record is stored under.
        key_id: KeyId,
    },

    /// A request that breaks the security policy (SP 800-57 strengths,
    /// SP 800-131A minimum sizes).
    #[error("policy violation: {reason}")]
    Policy {
        /// Which rule was broken.
        reason: String,
    },

    /// A key id that is already stored: storage is create-only.
    #[error("key {key_id} already exists")]
    AlreadyExists {
        /// The key id that was already present.
        key_id: KeyId,
    },

    /// A stored record failed its integrity check or could not be parsed.
    #[error("stored record for {key_id} is corrupt: {reason}")]
    CorruptRecord {
        /// The key id the record is stored under.
        key_id: KeyId,
        /// What failed (checksum, version, length...).
        reason: &'static str,
    },

    /// The storage backend failed (I/O, permissions, full disk...).
    #[error("{backend} storage failed: {message}")]
    Storage {
        /// Name of the storage backend.
        backend: &'static str,
        /// What it was doing.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// Reading or writing data (a file, a stream) failed.
    #[error("I/O error while {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A request or input larger than allowed.
    #[error("too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size that was offered.
        size: u64,
        /// The limit in force.
        limit: u64,
    },

    /// A ciphertext envelope that is not in a format this version reads
    /// (wrong magic, unknown version or algorithm, truncated).
    #[error("malformed ciphertext: {reason}")]
    MalformedCiphertext {
        /// What is wrong with its structure.
        reason: &'static str,
    },

    /// The ciphertext was sealed under another key than the one given.
    #[error("ciphertext was sealed under key {expected}, not under {given}")]
    KeyMismatch {
        /// The key id written in the ciphertext header.
        expected: KeyId,
        /// The key id of the KEK that was given.
        given: KeyId,
    },

    /// Authentication of the ciphertext failed: it was altered, or the key or
    /// the associated data (encryption context) is wrong. Deliberately says
    /// nothing more.
    #[error("decryption failed: the ciphertext is not authentic under this key and context")]
    DecryptionFailed,

    /// A cryptographic primitive of the cipher suite failed unexpectedly
    /// (random number generator, key generation...).
    #[error("{suite} cipher suite failed: {operation}")]
    Crypto {
        /// Name of the cipher suite.
        suite: &'static str,
        /// The operation that failed.
        operation: &'static str,
    },

    /// The client could not talk to the server, or the server's answer made
    /// no sense.
    #[error("transport error: {message}")]
    Transport {
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// The server answered with an error of its own (code and message from the
    /// wire).
    #[error("server error {code}: {message}")]
    Remote {
        /// The wire error code (see [`Error::code`]).
        code: i32,
        /// The server's message.
        message: String,
    },

    /// A bug or an unexpected state; never caused by input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Stable wire error codes, one per kind of failure.
///
/// These numbers are part of the protocol and never change meaning.
pub mod codes {
    /// No record under this key id.
    pub const NOT_FOUND: i32 = 1;
    /// Invalid key or key id.
    pub const INVALID_KEY: i32 = 2;
    /// The KEK does not unwrap the record.
    pub const UNWRAP_FAILED: i32 = 3;
    /// Security policy violation.
    pub const POLICY: i32 = 4;
    /// Storage or I/O failure (including corrupt records and duplicate ids).
    pub const STORAGE: i32 = 5;
    /// Request or input too large.
    pub const TOO_LARGE: i32 = 6;
    /// Internal error (including cipher-suite failures).
    pub const INTERNAL: i32 = 7;
    /// Ciphertext failed authentication.
    pub const DECRYPTION_FAILED: i32 = 8;
    /// Ciphertext structure not understood.
    pub const MALFORMED_CIPHERTEXT: i32 = 9;
    /// Ciphertext sealed under another key.
    pub const KEY_MISMATCH: i32 = 10;
    /// Client-side transport failure (never sent by a server).
    pub const TRANSPORT: i32 = 11;
}

impl Error {
    /// The stable wire error code of this error (see [`codes`]).
    ///
    /// ```
    /// use keyserver::Error;
    /// assert_eq!(Error::DecryptionFailed.code(), keyserver::error::codes::DECRYPTION_FAILED);
    /// ```
    pub fn code(&self) -> i32 {
        match self {
            Error::NotFound { .. } => codes::NOT_FOUND,
            Error::InvalidKey { .. } => codes::INVALID_KEY,
            Error::UnwrapFailed { .. } => codes::UNWRAP_FAILED,
            Error::Policy { .. } => codes::POLICY,
            Error::AlreadyExists { .. }
            | Error::CorruptRecord { .. }
            | Error::Storage { .. }
            | Error::Io { .. } => codes::STORAGE,
            Error::TooLarge { .. } => codes::TOO_LARGE,
            Error::MalformedCiphertext { .. } => codes::MALFORMED_CIPHERTEXT,
            Error::KeyMismatch { .. } => codes::KEY_MISMATCH,
            Error::DecryptionFailed => codes::DECRYPTION_FAILED,
            Error::Crypto { .. } | Error::Internal(_) => codes::INTERNAL,
            Error::Transport { .. } => codes::TRANSPORT,
            Error::Remote { code, .. } => *code,
        }
    }

    /// A storage error from a backend, with the underlying cause.
    ///
    /// ```
    /// let io = std::io::Error::other("disk full");
    /// let err = keyserver::Error::storage("file", "writing record", io);
    /// assert_eq!(err.code(), 5);
    /// ```
    pub fn storage(
        backend: &'static str,
        message: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Storage {
            backend,
            message: message.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A policy violation with the rule that was broken.
    pub(crate) fn policy(reason: impl fmt::Display) -> Self {
        Error::Policy {
            reason: reason.to_string(),
        }
    }
}
