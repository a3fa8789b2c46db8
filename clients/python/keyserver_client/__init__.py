"""A Python client for keyserver: envelope encryption with split knowledge.

The key server keeps only wrapped DEKs; you keep the KEK. This client
fetches a DEK with the KEK, caches it with a timeout, and encrypts and
decrypts locally, byte for byte as the Rust ``KeyClient`` does
(docs/FORMAT.md), so data sealed by either opens with the other.

>>> from keyserver_client import KeyClient
>>> KeyClient("https://keys.example.net:8731")
<KeyClient 'https://keys.example.net:8731'>
"""

from .client import DEFAULT_CACHE_CAPACITY, DEFAULT_TIMEOUT, CacheEntry, DekCache, KeyClient
from .errors import (
    Busy,
    DecryptionFailed,
    InternalError,
    InvalidKey,
    KeyMismatch,
    KeyServerError,
    KeyStateError,
    MalformedCiphertext,
    NotFound,
    NotPermitted,
    PolicyViolation,
    ProtocolError,
    StorageError,
    TooLarge,
    TransportError,
    UnwrapFailed,
)
from .keys import Kek

__version__ = "0.1.0"

__all__ = [
    "Busy",
    "CacheEntry",
    "DEFAULT_CACHE_CAPACITY",
    "DEFAULT_TIMEOUT",
    "DecryptionFailed",
    "DekCache",
    "InternalError",
    "InvalidKey",
    "Kek",
    "KeyClient",
    "KeyMismatch",
    "KeyServerError",
    "KeyStateError",
    "MalformedCiphertext",
    "NotFound",
    "NotPermitted",
    "PolicyViolation",
    "ProtocolError",
    "StorageError",
    "TooLarge",
    "TransportError",
    "UnwrapFailed",
]
