"""The key client: DEKs fetched from a remote key server, cached here with
a timeout, and data encrypted and decrypted locally, so the key server is
never a bottleneck (the Rust ``KeyClient``'s behaviour, in Python)."""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any, BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Sequence, Union

from . import formats
from .errors import Busy, InvalidKey, KeyMismatch, KeyServerError, PolicyViolation, TransportError
from .keys import Kek, KekLike, as_kek, is_key_id
from .transport import Failover, JsonRpc, Transport, XmlRpc, ssl_context

#: Seconds a fetched DEK is used before it is fetched again (the original
#: key server's default).
DEFAULT_TIMEOUT = 3600
#: Most DEKs the cache holds; the least recently used goes first.
DEFAULT_CACHE_CAPACITY = 1024
_PROTOCOLS = {"xmlrpc": XmlRpc, "jsonrpc": JsonRpc}


class CacheEntry(NamedTuple):
    """What the cache shows of one DEK (never the DEK itself)."""

    #: When the DEK was fetched (``time.monotonic()``).
    fetched: float
    #: The key id of its KEK.
    key_id: str
    #: Messages sealed under it since it was fetched.
    messages: int
    #: Plaintext bytes sealed under it since it was fetched.
    sealed_bytes: int


class _Entry:
    # The DEK is immutable bytes: a caller that took an entry keeps a valid
    # key even if another thread evicts it meanwhile. Python cannot wipe
    # memory reliably (the README says so); the entry is dropped, not wiped.
    __slots__ = ("dek", "key_id", "fetched", "messages", "sealed_bytes", "session")

    def __init__(self, dek: bytes, key_id: str) -> None:
        self.dek = bytes(dek)
        self.key_id = key_id
        self.fetched = time.monotonic()
        self.messages = 0
        self.sealed_bytes = 0
        self.session: Optional[formats.Session] = None


class DekCache:
    """The client's DEK cache, keyed by a fingerprint of the whole KEK
    document (a forged KEK for the same public key never reads another
    document's entry), with an LRU bound.

    ``kek in cache`` and ``cache[kek]`` (a :class:`CacheEntry`: ``[0]`` is
    the fetch time) take the KEK as PEM text or :class:`Kek`, as the
    original key server's ``client._cache[kek][0]`` did.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._entries: "collections.OrderedDict[bytes, _Entry]" = collections.OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, kek: KekLike) -> bool:
        return as_kek(kek).fingerprint in self._entries

    def __getitem__(self, kek: KekLike) -> CacheEntry:
        entry = self._entries[as_kek(kek).fingerprint]
        return CacheEntry(entry.fetched, entry.key_id, entry.messages, entry.sealed_bytes)

    def _get(self, kek: Kek) -> Optional[_Entry]:
        with self._lock:
            entry = self._entries.get(kek.fingerprint)
            if entry is not None:
                self._entries.move_to_end(kek.fingerprint)
            return entry

    def _put(self, kek: Kek, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(kek.fingerprint, None)
            self._entries[kek.fingerprint] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def _drop_entry(self, kek: Kek, entry: "_Entry") -> None:
        """Forgets ``kek``'s entry if it is still ``entry``."""
        with self._lock:
            if self._entries.get(kek.fingerprint) is entry:
                del self._entries[kek.fingerprint]

    def _drop_key_id(self, key_id: str) -> None:
        """Forgets every entry of ``key_id`` (whichever KEK document fetched it)."""
        with self._lock:
            for fingerprint in [f for f, e in self._entries.items() if e.key_id == key_id]:
                del self._entries[fingerprint]

    def clear(self) -> None:
        """Forgets every cached DEK."""
        with self._lock:
            self._entries.clear()


def _split_urls(url: Union[str, Sequence[str]]) -> List[str]:
    urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else [u.strip() for u in url]
    return [u for u in urls if u]


class KeyClient:
    """A client of one key server, or of several that share one storage.

    >>> client = KeyClient("http://127.0.0.1:8731/RPC2")
    >>> client
    <KeyClient 'http://127.0.0.1:8731/RPC2'>
    >>> client.timeout
    3600

    ``url``: one URL, several comma-separated (or a list) for failover, or
    ``None`` to read ``KEYSERVER_URL``. A URL without a path gets the
    protocol's (``/RPC2`` or ``/jsonrpc``). ``token`` (or ``token_file``,
    or ``KEYSERVER_TOKEN`` / ``KEYSERVER_TOKEN_FILE``) is sent as a bearer
    token; ``ca_cert`` trusts one CA instead of the system's roots;
    ``client_cert`` and ``client_key`` do mutual TLS.

    ``timeout``: seconds a fetched DEK is used (3600; 0 fetches it for every
    call). ``cache_capacity``: most DEKs held. ``max_messages`` and
    ``max_bytes``: optional limits on how many messages and plaintext bytes
    one fetched DEK seals before it is fetched again (the AWS Encryption
    SDK's caching limits). ``unwrap``: ``"server"`` (``get_key``: the server
    unwraps with the KEK you send) or ``"client"`` (``get_wrapped``: the KEK
    never leaves this machine; RSA and EC KEKs). ``envelope``: the version
    :meth:`encrypt` writes, 2 (the default) or 1; :meth:`decrypt` opens both.
    ``request_timeout``: seconds to wait for a server.

    Key material is refused over plain ``http://`` to a host that is not
    loopback unless ``insecure=True`` (behind a TLS-terminating proxy).
    """

    def __init__(
        self,
        url: Union[str, Sequence[str], None] = None,
        *,
        transport: str = "xmlrpc",
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        ca_cert: Optional[str] = None,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        cache_capacity: int = DEFAULT_CACHE_CAPACITY,
        max_messages: Optional[int] = None,
        max_bytes: Optional[int] = None,
        unwrap: str = "server",
        envelope: int = formats.VERSION_2,
        request_timeout: float = 30.0,
        insecure: bool = False,
    ) -> None:
        if url is None:
            url = os.environ.get("KEYSERVER_URL", "")
        urls = _split_urls(url)
        if not urls:
            raise PolicyViolation("no key server URL (give one, or set KEYSERVER_URL)")
        if transport not in _PROTOCOLS:
            raise PolicyViolation(f"unknown transport {transport!r}: xmlrpc or jsonrpc")
        if unwrap not in ("server", "client"):
            raise PolicyViolation(f"unknown unwrap mode {unwrap!r}: server or client")
        if envelope not in (formats.VERSION_1, formats.VERSION_2):
            raise PolicyViolation(f"unknown envelope version {envelope!r}: 1 or 2")
        if token is None and token_file is None:
            token = os.environ.get("KEYSERVER_TOKEN") or None
            token_file = os.environ.get("KEYSERVER_TOKEN_FILE") or None
        if token is None and token_file is not None:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        context = None
        if any(u.startswith("https:") for u in urls):
            context = ssl_context(ca_cert, client_cert, client_key)
        protocol = _PROTOCOLS[transport]
        self.transport = transport
        self._servers = Failover(
            [
                protocol(u, token=token, context=context, timeout=request_timeout, insecure=insecure)
                for u in urls
            ]
        )
        #: The server URL(s), comma-separated, without any credentials.
        self.url = ",".join(t.url for t in self._servers.transports)
        #: Seconds a fetched DEK is used before it is fetched again.
        self.timeout = timeout
        #: The DEK cache (``kek in client._cache``, ``client._cache[kek][0]``).
        self._cache = DekCache(cache_capacity)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.unwrap = unwrap
        self.envelope = envelope
        self._fetch_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<KeyClient {self.url!r}>"

    @property
    def cache(self) -> DekCache:
        """The DEK cache."""
        return self._cache

    def cache_entry(self, kek: KekLike) -> Optional[CacheEntry]:
        """What the cache holds for ``kek`` (its fetch time first), or ``None``."""
        return self._cache[kek] if kek in self._cache else None

    def _call(self, method: str, *params: Any) -> Any:
        return self._servers.call(method, *params)

    def _struct(self, method: str, *params: Any) -> Dict[str, Any]:
        """A call whose answer must be a struct."""
        result = self._call(method, *params)
        if not isinstance(result, dict):
            raise TransportError(f"the key server's answer to {method} does not fit the protocol")
        return dict(result)

    def _pem(self, method: str, *params: Any) -> str:
        """A call whose answer must be a KEK this client can use."""
        result = self._call(method, *params)
        if not isinstance(result, str):
            raise TransportError(f"the key server's answer to {method} does not fit the protocol")
        Kek(result)
        return result

    # -- keys ---------------------------------------------------------------

    def generate(self, strength: Optional[int] = None, alg: Optional[str] = None) -> str:
        """Asks the server for a new KEK (``strength`` 128, 192 or 256;
        ``alg`` ``"rsa"``, ``"ec"`` or ``"hybrid-pq"``) and returns it as PEM.
        The server keeps no copy: lose it and the data under its DEK is lost."""
        if alg is not None and strength is None:
            strength = self.status().get("strength")
            if not isinstance(strength, int):
                raise TransportError("the key server's status has no strength")
        params: List[Any] = [] if strength is None else [int(strength)]
        if alg is not None:
            params.append(alg)
        return self._pem("generate", *params)

    def get(self, kek: KekLike) -> bytes:
        """The DEK of ``kek``, from the cache while it is fresh."""
        return bytes(self._entry(as_kek(kek)).dek)

    def _entry(self, kek: Kek, sealing: int = -1) -> _Entry:
        # Returns the entry itself: its DEK is immutable, so an eviction by
        # another thread never changes the key a caller is using.
        entry = self._cache._get(kek)
        if entry is not None and self._fresh(entry, sealing):
            return entry
        with self._fetch_lock:
            entry = self._cache._get(kek)
            if entry is not None and self._fresh(entry, sealing):
                return entry
            if self.unwrap == "client":
                record = self._struct("get_wrapped", kek.key_id).get("record")
                if not isinstance(record, bytes):
                    raise TransportError("the key server's answer to get_wrapped does not fit the protocol")
                dek = kek.unwrap(record)
            else:
                dek = self._call("get_key", kek.pem)
                if not isinstance(dek, bytes) or len(dek) not in (16, 24, 32):
                    raise TransportError("the key server's answer to get_key is not a DEK")
            entry = _Entry(dek, kek.key_id)
            # With timeout 0 the entry is never reused (`_fresh` says no),
            # but it stays as the record of the last fetch.
            self._cache._put(kek, entry)
            return entry

    def _fresh(self, entry: _Entry, sealing: int) -> bool:
        if self.timeout <= 0 or time.monotonic() - entry.fetched >= self.timeout:
            return False
        return sealing < 0 or self._within_limits(entry, sealing)

    def _within_limits(self, entry: _Entry, sealing: int) -> bool:
        """Whether ``entry`` may seal one more message of ``sealing`` bytes.
        A DEK that has sealed nothing may seal any one message (fetching it
        again could not help)."""
        if entry.messages == 0:
            return True
        if self.max_messages is not None and entry.messages >= self.max_messages:
            return False
        return self.max_bytes is None or entry.sealed_bytes + sealing <= self.max_bytes

    def _reserve(self, kek: Kek, sealing: int) -> _Entry:
        """The entry to seal one message of ``sealing`` bytes with, counted
        under the cache's lock, so concurrent callers never seal past the
        limits; a DEK whose limit another caller reached is fetched again."""
        for _ in range(8):
            entry = self._entry(kek, sealing)
            with self._cache._lock:
                if self._within_limits(entry, sealing):
                    entry.messages += 1
                    entry.sealed_bytes += sealing
                    return entry
                self._cache._drop_entry(kek, entry)
        raise Busy("the DEK's message limit was reached by other callers eight times in a row")

    def __contains__(self, kek: Union[KekLike, str]) -> bool:
        """Whether the server holds a record for ``kek`` (or a key id)."""
        return bool(self._call("contains", self._key_id(kek)))

    @staticmethod
    def _key_id(kek: Union[KekLike, str]) -> str:
        return KeyClient._target(kek)[1]

    @staticmethod
    def _target(target: Union[KekLike, str]) -> "tuple[str, str]":
        """The wire target (a key id, or the KEK's PEM) and its key id."""
        if isinstance(target, Kek):
            return target.pem, target.key_id
        if isinstance(target, (bytes, bytearray)):
            try:
                target = bytes(target).decode("ascii")
            except UnicodeDecodeError:
                raise InvalidKey("invalid key: neither a key id nor a PEM KEK") from None
        if isinstance(target, str) and is_key_id(target):
            return target, target
        kek = as_kek(target)
        return kek.pem, kek.key_id

    def _change(self, method: str, target: Union[KekLike, str]) -> Dict[str, Any]:
        wire, key_id = self._target(target)
        try:
            return self._struct(method, wire)
        finally:
            # The key's state changed (or may have): its cached DEK goes, so
            # the next use asks the server, as the Rust client does.
            self._cache._drop_key_id(key_id)

    # -- data ---------------------------------------------------------------

    def encrypt(self, kek: KekLike, data: bytes, context: Optional[bytes] = None) -> bytes:
        """Encrypts ``data`` locally under the DEK of ``kek``, binding
        ``context`` (it must be given again to decrypt)."""
        kek = as_kek(kek)
        context = context or b""
        entry = self._reserve(kek, len(data))
        if self.envelope == formats.VERSION_1:
            return formats.seal_v1(bytes(entry.dek), kek.key_id, context, data)
        session = entry.session
        if session is None or session.is_spent():
            session = formats.Session(bytes(entry.dek), kek.key_id)
            entry.session = session
        return session.seal(context, data)

    def decrypt(self, kek: KekLike, data: bytes, context: Optional[bytes] = None) -> bytes:
        """Decrypts a message sealed under ``kek`` (or a key it was rotated
        from) with the same ``context``."""
        kek = as_kek(kek)
        header = formats.Header(data)
        self._check_key(kek, header.key_id)
        return formats.open_envelope(self.get(kek), context or b"", data, header)

    def encrypt_stream(self, kek: KekLike, src: BinaryIO, dst: BinaryIO) -> int:
        """Encrypts the binary file ``src`` into ``dst`` as a stream, in
        bounded memory; returns the plaintext bytes read."""
        kek = as_kek(kek)
        entry = self._entry(kek, 0)
        return formats.encrypt_stream(bytes(entry.dek), kek.key_id, src, dst)

    def decrypt_stream(self, kek: KekLike, src: BinaryIO, dst: BinaryIO) -> int:
        """Decrypts a stream from ``src`` into ``dst``; returns the
        plaintext bytes written (see :func:`formats.decrypt_stream`)."""
        kek = as_kek(kek)
        header = formats.StreamHeader(formats._read_full(src, formats.STREAM_HEADER_LEN))
        self._check_key(kek, header.key_id)
        return formats.decrypt_stream(self.get(kek), src, dst, header)

    def _check_key(self, kek: Kek, key_id: str) -> None:
        """A message under another key id opens only if ``kek``'s key was
        rotated from it (the server's ``rotated_from`` chain)."""
        if key_id == kek.key_id:
            return
        current = kek.key_id
        try:
            for _ in range(64):
                previous = self._struct("describe", current).get("rotated_from")
                if not isinstance(previous, str):
                    break
                if previous == key_id:
                    return
                current = previous
        except KeyServerError:
            pass  # not granted, or the chain ends: a mismatch, as in Rust
        raise KeyMismatch(f"sealed under key {key_id}, not {kek.key_id}")

    # -- lifecycle ------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """The server's status: keys, version, suite, storage, strength, kek_alg, fips."""
        return self._struct("status")

    def describe(self, kek: Union[KekLike, str]) -> Dict[str, Any]:
        """A key's lifecycle (state, strength, owner, times)."""
        return self._struct("describe", self._key_id(kek))

    def rotate(self, kek: KekLike, strength: Optional[int] = None) -> str:
        """A new KEK (PEM) whose record wraps the same DEK; the old key is deactivated."""
        old = as_kek(kek)
        params: List[Any] = [old.pem]
        if strength is not None:
            params.append(int(strength))
        try:
            return self._pem("rotate", *params)
        finally:
            self._cache._drop_key_id(old.key_id)

    def suspend(self, target: Union[KekLike, str]) -> Dict[str, Any]:
        """Suspends a key (by KEK, or by key id for an operator)."""
        return self._change("suspend", target)

    def resume(self, target: Union[KekLike, str]) -> Dict[str, Any]:
        """Resumes a suspended key (an operator's call)."""
        return self._change("resume", target)

    def compromised(self, target: Union[KekLike, str]) -> Dict[str, Any]:
        """Marks a key compromised: decrypt only, every use logged."""
        return self._change("compromised", target)

    def destroy(self, target: Union[KekLike, str]) -> Dict[str, Any]:
        """Schedules a key's destruction; the cached DEK is forgotten."""
        return self._change("destroy", target)

    def cancel_destroy(self, target: Union[KekLike, str]) -> Dict[str, Any]:
        """Cancels a scheduled destruction."""
        return self._change("cancel_destroy", target)

    def list_keys(
        self,
        state: Optional[str] = None,
        owner: Optional[str] = None,
        past_cryptoperiod: Optional[bool] = None,
        cursor: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Dict[str, Any]:
        """One page of keys: ``{"keys": [...], "cursor": ...}`` (``cursor``
        only when more follow)."""
        query = {
            "state": state,
            "owner": owner,
            "past_cryptoperiod": past_cryptoperiod,
            "cursor": cursor,
            "limit": limit,
        }
        query = {k: v for k, v in query.items() if v is not None}
        page = self._struct("list_keys", *([query] if query else []))
        if not isinstance(page.get("keys"), list):
            raise TransportError("the key server's answer to list_keys does not fit the protocol")
        return page

    def iter_keys(self, **filters: Any) -> Iterator[Dict[str, Any]]:
        """Every key the filter matches, page after page."""
        cursor = None
        while True:
            page = self.list_keys(cursor=cursor, **filters)
            yield from page["keys"]
            cursor = page.get("cursor")
            if not cursor:
                return
