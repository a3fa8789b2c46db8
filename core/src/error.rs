//! The one public error type of the crate.

use std::borrow::Cow;
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
        reason: Cow<'static, str>,
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
        reason: Cow<'static, str>,
    },

    /// The storage backend failed (I/O, permissions, full disk...).
    #[error("{backend} storage failed: {message}")]
    Storage {
        /// Name of the storage backend.
        backend: Cow<'static, str>,
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
        reason: Cow<'static, str>,
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
    Internal(Cow<'static, str>),

    /// The caller may not do this: no or bad credentials, or the method or
    /// strength is not granted to its principal. Deliberately one answer
    /// whatever the reason, so that nobody can probe which tokens exist.
    #[error("not permitted")]
    NotPermitted,

    /// The key's lifecycle state forbids this (a suspended, destroy-pending
    /// or destroyed key gives no DEK; only an active key encrypts new data;
    /// and a state change that the state does not allow).
    #[error("the state of key {key_id} ({state}) forbids this")]
    KeyState {
        /// The key.
        key_id: KeyId,
        /// Its state.
        state: crate::KeyState,
    },

    /// The server is at a limit it sets to protect everyone's service (its
    /// key-generation workers and queue, its budget of request memory):
    /// nothing was done; retry later, preferably with backoff.
    #[error("busy, retry later: {reason}")]
    Busy {
        /// Which limit was reached.
        reason: Cow<'static, str>,
    },

    /// A request the server could not take as a call of the wire API: it does
    /// not parse, is not a call, names no known method, or has parameters of
    /// the wrong number or type. `code` is the JSON-RPC 2.0 number used on
    /// both protocols.
    #[error("{message}")]
    Protocol {
        /// Which of the protocol-level failures it is.
        code: ErrorCode,
        /// What was expected (never the request itself: it may hold a KEK).
        message: String,
    },
}

/// The stable wire error codes, one per kind of failure.
///
/// The numbers are part of the protocol (`docs/PROTOCOL.md`) and never change
/// meaning. 1 to 13 are keyserver's own; the negative ones are JSON-RPC 2.0's
/// protocol-level codes, which the XML-RPC endpoint uses too. An error keeps
/// its code across the wire: [`Error::from_wire`] turns the code back into the
/// variant the server had.
///
/// ```
/// use keyserver::ErrorCode;
///
/// assert_eq!(ErrorCode::NotFound.number(), 1);
/// assert_eq!(ErrorCode::from_number(-32601), Some(ErrorCode::MethodNotFound));
/// assert_eq!(ErrorCode::from_number(99), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: no record under this key id.
    NotFound,
    /// 2: invalid key or key id.
    InvalidKey,
    /// 3: the KEK does not unwrap the record.
    UnwrapFailed,
    /// 4: security policy violation.
    Policy,
    /// 5: storage or I/O failure (including corrupt records and duplicate ids).
    Storage,
    /// 6: request or input too large.
    TooLarge,
    /// 7: internal error (including cipher-suite failures and time-outs).
    Internal,
    /// 8: ciphertext failed authentication.
    DecryptionFailed,
    /// 9: ciphertext structure not understood.
    MalformedCiphertext,
    /// 10: ciphertext sealed under another key.
    KeyMismatch,
    /// 11: client-side transport failure (never sent by a server).
    Transport,
    /// 12: the server is busy (a protective limit was reached); nothing was
    /// done, retry later.
    Busy,
    /// 13: not permitted (credentials, method or strength).
    NotPermitted,
    /// 14: the key's lifecycle state forbids this.
    KeyState,
    /// -32700: the request does not parse.
    ParseError,
    /// -32600: the request is not a valid call object.
    InvalidRequest,
    /// -32601: no such method.
    MethodNotFound,
    /// -32602: parameters missing or of the wrong type.
    InvalidParams,
}

impl ErrorCode {
    /// Every code, in the order of [`ErrorCode::number`] for keyserver's own.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::NotFound,
        ErrorCode::InvalidKey,
        ErrorCode::UnwrapFailed,
        ErrorCode::Policy,
        ErrorCode::Storage,
        ErrorCode::TooLarge,
        ErrorCode::Internal,
        ErrorCode::DecryptionFailed,
        ErrorCode::MalformedCiphertext,
        ErrorCode::KeyMismatch,
        ErrorCode::Transport,
        ErrorCode::Busy,
        ErrorCode::NotPermitted,
        ErrorCode::KeyState,
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
    ];

    /// The number sent on the wire.
    pub const fn number(self) -> i32 {
        match self {
            ErrorCode::NotFound => 1,
            ErrorCode::InvalidKey => 2,
            ErrorCode::UnwrapFailed => 3,
            ErrorCode::Policy => 4,
            ErrorCode::Storage => 5,
            ErrorCode::TooLarge => 6,
            ErrorCode::Internal => 7,
            ErrorCode::DecryptionFailed => 8,
            ErrorCode::MalformedCiphertext => 9,
            ErrorCode::KeyMismatch => 10,
            ErrorCode::Transport => 11,
            ErrorCode::Busy => 12,
            ErrorCode::NotPermitted => 13,
            ErrorCode::KeyState => 14,
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
        }
    }

    /// The code with this wire number, if there is one.
    pub fn from_number(number: i32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.number() == number)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The wire error codes as plain integers (see [`ErrorCode`]).
pub mod codes {
    use super::ErrorCode;

    /// No record under this key id.
    pub const NOT_FOUND: i32 = ErrorCode::NotFound.number();
    /// Invalid key or key id.
    pub const INVALID_KEY: i32 = ErrorCode::InvalidKey.number();
    /// The KEK does not unwrap the record.
    pub const UNWRAP_FAILED: i32 = ErrorCode::UnwrapFailed.number();
    /// Security policy violation.
    pub const POLICY: i32 = ErrorCode::Policy.number();
    /// Storage or I/O failure (including corrupt records and duplicate ids).
    pub const STORAGE: i32 = ErrorCode::Storage.number();
    /// Request or input too large.
    pub const TOO_LARGE: i32 = ErrorCode::TooLarge.number();
    /// Internal error (including cipher-suite failures).
    pub const INTERNAL: i32 = ErrorCode::Internal.number();
    /// Ciphertext failed authentication.
    pub const DECRYPTION_FAILED: i32 = ErrorCode::DecryptionFailed.number();
    /// Ciphertext structure not understood.
    pub const MALFORMED_CIPHERTEXT: i32 = ErrorCode::MalformedCiphertext.number();
    /// Ciphertext sealed under another key.
    pub const KEY_MISMATCH: i32 = ErrorCode::KeyMismatch.number();
    /// Client-side transport failure (never sent by a server).
    pub const TRANSPORT: i32 = ErrorCode::Transport.number();
    /// The server is busy; retry later.
    pub const BUSY: i32 = ErrorCode::Busy.number();
    /// Not permitted.
    pub const NOT_PERMITTED: i32 = ErrorCode::NotPermitted.number();
    /// The key's lifecycle state forbids this.
    pub const KEY_STATE: i32 = ErrorCode::KeyState.number();
}

impl Error {
    /// The stable wire error code of this error (see [`ErrorCode`]).
    ///
    /// ```
    /// use keyserver::Error;
    /// assert_eq!(Error::DecryptionFailed.code(), keyserver::error::codes::DECRYPTION_FAILED);
    /// ```
    pub fn code(&self) -> i32 {
        match self {
            Error::Remote { code, .. } => *code,
            other => other
                .kind()
                .map_or(ErrorCode::Internal.number(), ErrorCode::number),
        }
    }

    /// The [`ErrorCode`] of this error; `None` only for an
    /// [`Error::Remote`] whose number this version does not know.
    ///
    /// ```
    /// use keyserver::{Error, ErrorCode};
    /// assert_eq!(Error::DecryptionFailed.kind(), Some(ErrorCode::DecryptionFailed));
    /// ```
    pub fn kind(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::InvalidKey { .. } => ErrorCode::InvalidKey,
            Error::UnwrapFailed { .. } => ErrorCode::UnwrapFailed,
            Error::Policy { .. } => ErrorCode::Policy,
            Error::AlreadyExists { .. }
            | Error::CorruptRecord { .. }
            | Error::Storage { .. }
            | Error::Io { .. } => ErrorCode::Storage,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::MalformedCiphertext { .. } => ErrorCode::MalformedCiphertext,
            Error::KeyMismatch { .. } => ErrorCode::KeyMismatch,
            Error::DecryptionFailed => ErrorCode::DecryptionFailed,
            Error::Crypto { .. } | Error::Internal(_) => ErrorCode::Internal,
            Error::Transport { .. } => ErrorCode::Transport,
            Error::Busy { .. } => ErrorCode::Busy,
            Error::NotPermitted => ErrorCode::NotPermitted,
            Error::KeyState { .. } => ErrorCode::KeyState,
            Error::Protocol { code, .. } => *code,
            Error::Remote { code, .. } => return ErrorCode::from_number(*code),
        })
    }

    /// The error a client reports for a wire error: `code` and `message` as
    /// the server sent them, `key_id` the key the call was about (if any).
    ///
    /// The result is the variant the server had, with the same `Display`
    /// text, so code that matches on variants works the same against a local
    /// [`KeyServer`](crate::KeyServer) and a remote one. Where that cannot be
    /// rebuilt exactly (a code this version does not know; a message that
    /// does not carry what the variant needs, such as an [`Error::Io`] or an
    /// [`Error::Crypto`], which have no text form to parse back) the result
    /// is [`Error::Remote`] with the server's code and message: never a
    /// variant whose text differs from the server's.
    ///
    /// ```
    /// use keyserver::{Error, KeyId};
    ///
    /// let id = KeyId::from_bytes([7; 32]);
    /// let local = Error::NotFound { key_id: id };
    /// let remote = Error::from_wire(local.code(), local.to_string(), Some(id));
    /// assert!(matches!(remote, Error::NotFound { key_id } if key_id == id));
    /// let local = Error::TooLarge { size: 10, limit: 5 };
    /// let remote = Error::from_wire(local.code(), local.to_string(), None);
    /// assert!(matches!(remote, Error::TooLarge { size: 10, limit: 5 }));
    /// assert!(matches!(Error::from_wire(99, "?".into(), None), Error::Remote { code: 99, .. }));
    /// ```
    pub fn from_wire(code: i32, message: String, key_id: Option<KeyId>) -> Error {
        let strip = |prefix: &str| message.strip_prefix(prefix).map(str::to_owned);
        let remote = |message: String| Error::Remote { code, message };
        let Some(kind) = ErrorCode::from_number(code) else {
            return remote(message);
        };
        let typed = match kind {
            ErrorCode::NotFound => key_id.map(|key_id| Error::NotFound { key_id }),
            ErrorCode::UnwrapFailed => key_id.map(|key_id| Error::UnwrapFailed { key_id }),
            ErrorCode::InvalidKey => strip("invalid key: ").map(|r| Error::InvalidKey {
                reason: Cow::Owned(r),
            }),
            ErrorCode::Policy => strip("policy violation: ").map(|reason| Error::Policy { reason }),
            ErrorCode::Storage => storage_from_wire(&message, key_id),
            ErrorCode::TooLarge => parse_too_large(&message),
            ErrorCode::Internal => {
                strip("internal error: ").map(|m| Error::Internal(Cow::Owned(m)))
            }
            ErrorCode::DecryptionFailed => Some(Error::DecryptionFailed),
            ErrorCode::MalformedCiphertext => {
                strip("malformed ciphertext: ").map(|r| Error::MalformedCiphertext {
                    reason: Cow::Owned(r),
                })
            }
            ErrorCode::KeyMismatch => parse_key_mismatch(&message),
            ErrorCode::NotPermitted => Some(Error::NotPermitted),
            ErrorCode::KeyState => parse_key_state(&message),
            ErrorCode::Busy => strip("busy, retry later: ").map(|r| Error::Busy {
                reason: Cow::Owned(r),
            }),
            ErrorCode::ParseError
            | ErrorCode::InvalidRequest
            | ErrorCode::MethodNotFound
            | ErrorCode::InvalidParams => Some(Error::Protocol {
                code: kind,
                message: message.clone(),
            }),
            // A server never sends code 11: keep what it said.
            ErrorCode::Transport => None,
        };
        typed.unwrap_or_else(|| remote(message))
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
            backend: Cow::Borrowed(backend),
            message: message.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// A policy violation with the rule that was broken.
    ///
    /// ```
    /// let e = keyserver::Error::policy("the request line is too long");
    /// assert_eq!(e.kind(), Some(keyserver::ErrorCode::Policy));
    /// ```
    pub fn policy(reason: impl fmt::Display) -> Self {
        Error::Policy {
            reason: reason.to_string(),
        }
    }

    /// A protocol-level error ([`Error::Protocol`]): what a transport's
    /// codec returns for a request it cannot read.
    ///
    /// ```
    /// use keyserver::{Error, ErrorCode};
    /// let e = Error::protocol(ErrorCode::ParseError, "not a methodCall");
    /// assert_eq!(e.kind(), Some(ErrorCode::ParseError));
    /// ```
    pub fn protocol(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Protocol {
            code,
            message: message.into(),
        }
    }
}

/// The storage errors share code 5: tell them apart by their text.
fn storage_from_wire(message: &str, key_id: Option<KeyId>) -> Option<Error> {
    if let Some(key_id) = key_id {
        if message == (Error::AlreadyExists { key_id }).to_string() {
            return Some(Error::AlreadyExists { key_id });
        }
        let corrupt = format!("stored record for {key_id} is corrupt: ");
        if let Some(reason) = message.strip_prefix(&corrupt) {
            return Some(Error::CorruptRecord {
                key_id,
                reason: Cow::Owned(reason.to_owned()),
            });
        }
    }
    // "file storage failed: writing record": any backend's name is one word.
    let (backend, what) = message.split_once(" storage failed: ")?;
    if backend.is_empty() || backend.contains(char::is_whitespace) {
        return None;
    }
    Some(Error::Storage {
        backend: Cow::Owned(backend.to_owned()),
        message: what.to_owned(),
        source: None,
    })
}

/// `too large: N bytes exceeds the limit of M bytes`.
fn parse_too_large(message: &str) -> Option<Error> {
    let rest = message.strip_prefix("too large: ")?;
    let (size, limit) = rest.split_once(" bytes exceeds the limit of ")?;
    let limit = limit.strip_suffix(" bytes")?;
    Some(Error::TooLarge {
        size: size.parse().ok()?,
        limit: limit.parse().ok()?,
    })
}

/// `ciphertext was sealed under key A, not under B`.
/// "the state of key ID (STATE) forbids this" -> `Error::KeyState`.
fn parse_key_state(message: &str) -> Option<Error> {
    let rest = message.strip_prefix("the state of key ")?;
    let (id, rest) = rest.split_once(" (")?;
    let (state, _) = rest.split_once(')')?;
    Some(Error::KeyState {
        key_id: id.parse().ok()?,
        state: state.parse().ok()?,
    })
}

fn parse_key_mismatch(message: &str) -> Option<Error> {
    let rest = message.strip_prefix("ciphertext was sealed under key ")?;
    let (expected, given) = rest.split_once(", not under ")?;
    Some(Error::KeyMismatch {
        expected: expected.parse().ok()?,
        given: given.parse().ok()?,
    })
}

/// The cause of a transport failure that proves the request never reached
/// a server: the connection could not be made. A [`Transport`](crate::Transport)
/// puts its connect error in one, as the source of [`Error::Transport`], so
/// that [`Failover`](crate::transports::Failover) may send even a state
/// change to the next server. It shows as the error it holds.
///
/// ```
/// use keyserver::plugin::NotSent;
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let error = keyserver::Error::Transport {
///     message: "cannot reach the key server at http://127.0.0.1:1/".into(),
///     source: Some(Box::new(NotSent(Box::new(refused)))),
/// };
/// assert_eq!(error.kind(), Some(keyserver::ErrorCode::Transport));
/// ```
#[derive(Debug)]
pub struct NotSent(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
