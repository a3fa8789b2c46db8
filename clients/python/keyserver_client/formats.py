"""keyserver's data formats, byte for byte as docs/FORMAT.md defines them
and as the Rust client writes them: the envelope (versions 1 and 2) for
messages, and the stream (version 1) for data of any size.

AES-GCM and HKDF come from the ``cryptography`` package; nothing here is a
primitive of its own. Known-answer vectors: ``testing/vectors/``.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
from typing import BinaryIO, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptionFailed, MalformedCiphertext, PolicyViolation, TooLarge
from .keys import DEK_ALG, DEK_LEN

ENVELOPE_MAGIC = b"KSE"
STREAM_MAGIC = b"KSS"
#: Envelope version 1: a random salt and nonce per message.
VERSION_1 = 1
#: Envelope version 2: a session per DEK, counter nonces, a key commitment.
VERSION_2 = 2
KEY_ID_LEN = 32
SALT_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
COMMITMENT_LEN = 32
HEADER_LEN = 3 + 1 + 1 + KEY_ID_LEN + SALT_LEN + NONCE_LEN  # 81
HEADER_LEN_V2 = HEADER_LEN + COMMITMENT_LEN  # 113
#: Longest plaintext of one message (SP 800-38D: 2^39 - 256 bits).
MAX_PLAINTEXT = (1 << 36) - 32
#: Messages one v2 session seals before it is spent.
SESSION_MAX_MESSAGES = 1 << 32
#: AES blocks one v2 session encrypts before it is spent (1 TiB).
SESSION_MAX_BLOCKS = 1 << 36
#: Plaintext bytes per stream chunk, as keyserver writes them.
STREAM_CHUNK = 65536
STREAM_HEADER_LEN = 80
STREAM_MAX_CHUNK = 16 << 20
_V1_INFO = b"keyserver envelope v1"
_V2_KEY_INFO = b"keyserver envelope v2 key"
_V2_COMMITMENT_INFO = b"keyserver envelope v2 commitment"
_STREAM_INFO = b"keyserver stream v1"


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def _alg(dek: bytes) -> int:
    try:
        return DEK_ALG[len(dek)]
    except KeyError:
        raise MalformedCiphertext("a DEK is 16, 24 or 32 bytes") from None


class Header:
    """The clear header of an envelope: version, DEK algorithm, key id."""

    __slots__ = ("version", "alg", "key_id", "salt", "nonce", "commitment", "length")

    def __init__(self, data: bytes) -> None:
        if len(data) < 5 or data[:3] != ENVELOPE_MAGIC:
            raise MalformedCiphertext("malformed ciphertext: not a keyserver envelope")
        self.version = data[3]
        if self.version not in (VERSION_1, VERSION_2):
            raise MalformedCiphertext("malformed ciphertext: unsupported format version")
        self.alg = data[4]
        if self.alg not in DEK_LEN:
            raise MalformedCiphertext("malformed ciphertext: unknown algorithm")
        self.length = HEADER_LEN if self.version == VERSION_1 else HEADER_LEN_V2
        if len(data) < self.length + TAG_LEN:
            raise MalformedCiphertext("malformed ciphertext: too short")
        #: The key id (hex) of the KEK whose DEK sealed the message.
        self.key_id = data[5:37].hex()
        self.salt = data[37:69]
        self.nonce = data[69:81]
        self.commitment = data[81:113] if self.version == VERSION_2 else b""


def seal_v1(
    dek: bytes,
    key_id: str,
    context: bytes,
    plaintext: bytes,
    salt: Optional[bytes] = None,
    nonce: Optional[bytes] = None,
) -> bytes:
    """A version 1 envelope. ``salt`` and ``nonce`` are for known-answer
    tests only: by default they come from the OS CSPRNG."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise TooLarge("plaintext too large for one message")
    alg = _alg(dek)
    salt = os.urandom(SALT_LEN) if salt is None else salt
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    header = ENVELOPE_MAGIC + bytes([VERSION_1, alg]) + bytes.fromhex(key_id) + salt + nonce
    key = _hkdf(dek, salt, _V1_INFO + bytes([alg]), len(dek))
    return header + AESGCM(key).encrypt(nonce, plaintext, header + context)


class Session:
    """An envelope version 2 writer for one DEK: its key and commitment are
    derived once, and each message takes the next number as its nonce.

    Thread-safe. A session is spent after 2^32 messages or 2^36 AES blocks,
    and in a process forked from the one that made it (the child would
    continue its parent's counter under the same key); :meth:`seal` then
    raises :class:`PolicyViolation` and the caller starts a new session
    (:class:`~keyserver_client.KeyClient` does that by itself).
    """

    def __init__(self, dek: bytes, key_id: str, salt: Optional[bytes] = None, counter: int = 0) -> None:
        alg = _alg(dek)
        salt = os.urandom(SALT_LEN) if salt is None else salt
        self._aead = AESGCM(_hkdf(dek, salt, _V2_KEY_INFO + bytes([alg]), len(dek)))
        commitment = _hkdf(dek, salt, _V2_COMMITMENT_INFO + bytes([alg]), COMMITMENT_LEN)
        self._prefix = ENVELOPE_MAGIC + bytes([VERSION_2, alg]) + bytes.fromhex(key_id) + salt
        self._commitment = commitment
        self._lock = threading.Lock()
        self._messages = counter
        self._blocks = 0
        self._pid = os.getpid()
        self._generation = _fork_generation

    @property
    def sealed(self) -> int:
        """Messages sealed so far (the next message's number)."""
        return self._messages

    def is_spent(self) -> bool:
        """Whether this session may seal no more (limits, or a forked process)."""
        return (
            self._pid != os.getpid()
            or self._generation != _fork_generation
            or self._messages >= SESSION_MAX_MESSAGES
            or self._blocks >= SESSION_MAX_BLOCKS
        )

    def seal(self, context: bytes, plaintext: bytes) -> bytes:
        """Seals ``plaintext`` as a version 2 envelope, binding ``context``."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise TooLarge("plaintext too large for one message")
        blocks = (len(plaintext) + 15) // 16 + 1
        with self._lock:
            if self.is_spent() or self._blocks + blocks > SESSION_MAX_BLOCKS:
                raise PolicyViolation(
                    "envelope session spent (message or byte limit, or a forked process): start a new one"
                )
            number = self._messages
            self._messages += 1
            self._blocks += blocks
        nonce = number.to_bytes(NONCE_LEN, "big")
        header = self._prefix + nonce + self._commitment
        return header + self._aead.encrypt(nonce, plaintext, header + context)


_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def open_envelope(dek: bytes, context: bytes, data: bytes, header: Optional[Header] = None) -> bytes:
    """Opens an envelope of either version. Any change to any byte, another
    context or another DEK raises :class:`DecryptionFailed`."""
    header = Header(data) if header is None else header
    if header.alg != _alg(dek):
        raise DecryptionFailed("decryption failed")
    head = data[: header.length]
    if header.version == VERSION_1:
        key = _hkdf(dek, header.salt, _V1_INFO + bytes([header.alg]), len(dek))
    else:
        key = _hkdf(dek, header.salt, _V2_KEY_INFO + bytes([header.alg]), len(dek))
        commitment = _hkdf(dek, header.salt, _V2_COMMITMENT_INFO + bytes([header.alg]), COMMITMENT_LEN)
        if not hmac.compare_digest(commitment, header.commitment):
            raise DecryptionFailed("decryption failed")
    try:
        return AESGCM(key).decrypt(header.nonce, data[header.length :], head + context)
    except InvalidTag:
        raise DecryptionFailed("decryption failed") from None


class StreamHeader:
    """The 80-byte header of a stream."""

    __slots__ = ("alg", "key_id", "salt", "prefix", "chunk", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) < STREAM_HEADER_LEN or raw[:3] != STREAM_MAGIC:
            raise MalformedCiphertext("malformed ciphertext: not a keyserver stream")
        if raw[3] != 1:
            raise MalformedCiphertext("malformed ciphertext: unsupported format version")
        self.alg = raw[4]
        if self.alg not in DEK_LEN:
            raise MalformedCiphertext("malformed ciphertext: unknown algorithm")
        self.key_id = raw[5:37].hex()
        self.salt = raw[37:69]
        self.prefix = raw[69:76]
        (self.chunk,) = struct.unpack(">I", raw[76:80])
        if not 1 <= self.chunk <= STREAM_MAX_CHUNK:
            raise MalformedCiphertext("malformed ciphertext: bad chunk size")
        self.raw = raw[:STREAM_HEADER_LEN]


def _read_full(src: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        part = src.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _stream_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise TooLarge("stream too long: more than 2^32 chunks")
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def encrypt_stream(
    dek: bytes,
    key_id: str,
    src: BinaryIO,
    dst: BinaryIO,
    chunk: int = STREAM_CHUNK,
    salt: Optional[bytes] = None,
    prefix: Optional[bytes] = None,
) -> int:
    """Encrypts ``src`` into ``dst`` as a stream, two chunks in memory at a
    time; returns the plaintext bytes read. ``salt`` and ``prefix`` are for
    known-answer tests only."""
    alg = _alg(dek)
    if not 1 <= chunk <= STREAM_MAX_CHUNK:
        raise PolicyViolation("stream chunk size must be 1 byte to 16 MiB")
    salt = os.urandom(SALT_LEN) if salt is None else salt
    prefix = os.urandom(7) if prefix is None else prefix
    header = STREAM_MAGIC + bytes([1, alg]) + bytes.fromhex(key_id) + salt + prefix + struct.pack(">I", chunk)
    aead = AESGCM(_hkdf(dek, salt, _STREAM_INFO + bytes([alg]), len(dek)))
    dst.write(header)
    total, index = 0, 0
    current = _read_full(src, chunk)
    while True:
        following = _read_full(src, chunk) if len(current) == chunk else b""
        last = not following
        dst.write(aead.encrypt(_stream_nonce(prefix, index, last), current, header))
        total += len(current)
        index += 1
        if last:
            return total
        current = following


def decrypt_stream(dek: bytes, src: BinaryIO, dst: BinaryIO, header: Optional[StreamHeader] = None) -> int:
    """Decrypts a stream from ``src`` into ``dst``; returns the plaintext
    bytes written. Each chunk is written only after its tag verifies; a
    reordered, truncated or extended stream raises. On error ``dst`` may hold
    the authentic chunks before the failure: write to a temporary file and
    keep it only on success."""
    if header is None:
        header = StreamHeader(_read_full(src, STREAM_HEADER_LEN))
    if header.alg != _alg(dek):
        raise DecryptionFailed("decryption failed")
    aead = AESGCM(_hkdf(dek, header.salt, _STREAM_INFO + bytes([header.alg]), len(dek)))
    sealed_chunk = header.chunk + TAG_LEN
    total, index = 0, 0
    current = _read_full(src, sealed_chunk)
    while True:
        following = _read_full(src, sealed_chunk) if len(current) == sealed_chunk else b""
        last = not following
        if len(current) < TAG_LEN:
            raise DecryptionFailed("decryption failed: the stream is truncated")
        try:
            plain = aead.decrypt(_stream_nonce(header.prefix, index, last), current, header.raw)
        except InvalidTag:
            raise DecryptionFailed("decryption failed") from None
        dst.write(plain)
        total += len(plain)
        index += 1
        if last:
            return total
        current = following
