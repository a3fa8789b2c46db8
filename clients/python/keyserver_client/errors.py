"""Errors: one exception class per wire code (docs/PROTOCOL.md, "Errors").

Every error a :class:`~keyserver_client.KeyClient` raises is a
:class:`KeyServerError` with the code the Rust client and the server use, so
``except KeyServerError as e: e.code`` matches on the code alone. Messages
are for people and never contain key material.
"""

from __future__ import annotations

from typing import Dict, Type


class KeyServerError(Exception):
    """A keyserver error, with its wire code in :attr:`code`."""

    #: The wire code (docs/PROTOCOL.md); subclasses set their own.
    code: int = 7

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, code={self.code})"


class NotFound(KeyServerError):
    """Code 1: no record under that key id."""

    code = 1


class InvalidKey(KeyServerError):
    """Code 2: not a KEK (or key id) the server or this client can use."""

    code = 2


class UnwrapFailed(KeyServerError):
    """Code 3: the KEK does not open the stored record."""

    code = 3


class PolicyViolation(KeyServerError):
    """Code 4: refused by policy (strength, algorithm, plain HTTP off loopback)."""

    code = 4


class StorageError(KeyServerError):
    """Code 5: the server's storage (or audit log) failed, or a record is corrupt."""

    code = 5


class TooLarge(KeyServerError):
    """Code 6: the request is too large."""

    code = 6


class InternalError(KeyServerError):
    """Code 7: an internal error, or the server's time limit."""

    code = 7


class DecryptionFailed(KeyServerError):
    """Code 8: the ciphertext is not authentic (tampered, truncated, wrong key or context)."""

    code = 8


class MalformedCiphertext(KeyServerError):
    """Code 9: not a ciphertext this client understands."""

    code = 9


class KeyMismatch(KeyServerError):
    """Code 10: sealed under another key than the KEK given."""

    code = 10


class TransportError(KeyServerError):
    """Code 11: the server could not be reached, or its answer did not fit the protocol."""

    code = 11


class Busy(KeyServerError):
    """Code 12: a protective limit was reached; nothing was done, retry later."""

    code = 12


class NotPermitted(KeyServerError):
    """Code 13: no or bad credentials, or the call is not granted."""

    code = 13


class KeyStateError(KeyServerError):
    """Code 14: the key's lifecycle state forbids this."""

    code = 14


class ProtocolError(KeyServerError):
    """Codes -32700 .. -32602: the request did not parse or did not fit the method."""

    code = -32600


_BY_CODE: Dict[int, Type[KeyServerError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        InvalidKey,
        UnwrapFailed,
        PolicyViolation,
        StorageError,
        TooLarge,
        InternalError,
        DecryptionFailed,
        MalformedCiphertext,
        KeyMismatch,
        TransportError,
        Busy,
        NotPermitted,
        KeyStateError,
    )
}


def from_code(code: int, message: str) -> KeyServerError:
    """The exception for a wire ``code`` (an unknown one keeps its number)."""
    if code in _BY_CODE:
        return _BY_CODE[code](message)
    if -32768 <= code <= -32000:
        return ProtocolError(message, code)
    return KeyServerError(message, code)
