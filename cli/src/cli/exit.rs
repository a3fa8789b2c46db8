//! Failures and the exit codes they give (README, "Exit codes").

use keyserver::{Error, ErrorCode};

/// Exit codes: 0 success, 1 other failure, 2 usage, 3 cannot reach or talk
/// to the server, 4 key not found, 5 authentication or decryption failure,
/// 6 the server is busy (retry later), 7 not permitted, 8 the key's state
/// forbids it.
pub(crate) const USAGE: u8 = 2;

/// The exit code of an error, from its wire code: the same whether the error
/// happened here or on the server.
pub(crate) fn exit_code(error: &Error) -> u8 {
    match error.kind() {
        Some(ErrorCode::Transport) => 3,
        Some(ErrorCode::NotFound) => 4,
        Some(
            ErrorCode::DecryptionFailed
            | ErrorCode::UnwrapFailed
            | ErrorCode::KeyMismatch
            | ErrorCode::MalformedCiphertext,
        ) => 5,
        Some(ErrorCode::Busy) => 6,
        Some(ErrorCode::NotPermitted) => 7,
        Some(ErrorCode::KeyState) => 8,
        _ => 1,
    }
}

/// A failure with its exit code and one line for stderr.
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<Error> for Failure {
    /// The error and every cause under it, each once: "cannot reach the key
    /// server" says where and why (the URL, "Connection refused").
    fn from(e: Error) -> Self {
        let code = exit_code(&e);
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        Failure { code, message }
    }
}

/// A usage error (exit code 2).
pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: USAGE,
        message: message.into(),
    }
}

/// A local I/O failure (exit code 1).
pub(crate) fn io_failure(what: String, e: std::io::Error) -> Failure {
    Failure {
        code: 1,
        message: format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote error and the local one it was give the same exit code.
    #[test]
    fn exit_codes_follow_the_error_code_across_the_wire() {
        let id = keyserver::KeyId::from_bytes([1; 32]);
        for (local, code) in [
            (Error::NotFound { key_id: id }, 4),
            (Error::UnwrapFailed { key_id: id }, 5),
            (Error::DecryptionFailed, 5),
            (Error::Policy { reason: "p".into() }, 1),
        ] {
            assert_eq!(exit_code(&local), code, "{local}");
            let remote = Error::from_wire(local.code(), local.to_string(), Some(id));
            assert_eq!(exit_code(&remote), code, "{remote}");
        }
        let down = Error::Transport {
            message: "down".into(),
            source: None,
        };
        assert_eq!(exit_code(&down), 3);
    }
}
