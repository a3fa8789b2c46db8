"""KEKs on the client: parsing, key ids, fingerprints, and client-side unwrap
of a stored record (docs/FORMAT.md, "Stored record").

A KEK is the PEM document ``generate`` returned: PKCS#8 for RSA and EC keys
(``-----BEGIN PRIVATE KEY-----``), keyserver's ``HpkePrivateKey`` for the
hybrid post-quantum ones (``-----BEGIN HPKE PRIVATE KEY-----``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .errors import (
    InvalidKey,
    PolicyViolation,
    StorageError,
    UnwrapFailed,
)

KekLike = Union[str, bytes, "Kek"]

#: DEK algorithm ids (envelope, stream and record ``A`` byte) by DEK length.
DEK_ALG = {16: 1, 24: 2, 32: 3}
#: DEK lengths by algorithm id.
DEK_LEN = {v: k for k, v in DEK_ALG.items()}

_PEM = re.compile(
    r"-----BEGIN (PRIVATE KEY|HPKE PRIVATE KEY)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END \1-----"
)

# Record wrap algorithms (FORMAT.md): W byte -> (kind, KEK size in bits).
_WRAP_RSA = 1
_WRAP_EC = {2: ("P-256", 256), 3: ("P-384", 384), 4: ("P-521", 521)}
_WRAP_HYBRID = {5: 768, 6: 1024}
_HYBRID_KEMS = {0x0050: (5, 768), 0x0051: (6, 1024)}
# ML-KEM encapsulation key then the uncompressed point.
_HYBRID_PUBLIC_LEN = {0x0050: 1184 + 65, 0x0051: 1568 + 97}
# HPKE `enc` by record wrap algorithm (FORMAT.md).
_ENC_LEN = {2: 65, 3: 97, 4: 133, 5: 1153, 6: 1665}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
RECORD_MAGIC = b"KSWR"
RECORD_INFO = b"keyserver wrapped DEK v1"


def _der_tlv(data: bytes, offset: int, tag: int) -> Tuple[bytes, int]:
    """Reads one DER TLV of ``tag`` at ``offset``: (its value, the next offset)."""
    if offset + 2 > len(data) or data[offset] != tag:
        raise InvalidKey("invalid key: malformed HPKE private key")
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or offset + count > len(data):
            raise InvalidKey("invalid key: malformed HPKE private key")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise InvalidKey("invalid key: malformed HPKE private key")
    return data[offset : offset + length], offset + length


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_int(n: int) -> bytes:
    body = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
    return b"\x02" + _der_len(len(body)) + body


def _der_octets(b: bytes) -> bytes:
    return b"\x04" + _der_len(len(b)) + b


class Kek:
    """A parsed KEK. Its text is secret: ``repr`` shows the key id only.

    >>> Kek("not a key")
    Traceback (most recent call last):
    ...
    keyserver_client.errors.InvalidKey: invalid key: not a PEM private key
    """

    __slots__ = ("pem", "der", "kind", "key_id", "fingerprint", "bits", "_private", "_hybrid")

    def __init__(self, pem: Union[str, bytes]) -> None:
        if isinstance(pem, (bytes, bytearray, memoryview)):
            text = bytes(pem).decode("ascii", "replace")
        elif isinstance(pem, str):
            text = pem
        else:
            raise InvalidKey("invalid key: a KEK is PEM text")
        match = _PEM.search(text)
        if match is None:
            raise InvalidKey("invalid key: not a PEM private key")
        try:
            der = base64.b64decode("".join(match.group(2).split()), validate=True)
        except ValueError:
            raise InvalidKey("invalid key: bad base64 in the PEM") from None
        #: The PEM block (what is sent to the server; text around it is not).
        self.pem: str = match.group(0) + "\n"
        #: The DER of the private key document.
        self.der: bytes = der
        #: SHA-256 of the whole private key document: the DEK cache's key,
        #: so a forged KEK (another document for the same public key) never
        #: reads another document's entry.
        self.fingerprint: bytes = hashlib.sha256(b"keyserver kek fingerprint\x00" + der).digest()
        self._private: Optional[object] = None
        self._hybrid: Optional[Tuple[int, bytes, bytes]] = None
        if match.group(1) == "PRIVATE KEY":
            try:
                key = serialization.load_der_private_key(der, password=None)
            except (ValueError, TypeError, Exception):
                raise InvalidKey("invalid key: not a PKCS#8 RSA or EC private key") from None
            if isinstance(key, rsa.RSAPrivateKey):
                self.kind = "rsa"
                self.bits = key.key_size
                if not MIN_RSA_BITS <= self.bits <= MAX_RSA_BITS:
                    raise InvalidKey("invalid key: RSA outside 2048..16384 bits")
            elif isinstance(key, ec.EllipticCurvePrivateKey):
                self.kind = "ec"
                self.bits = key.curve.key_size
                if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
                    raise InvalidKey("invalid key: an EC KEK is on P-256, P-384 or P-521")
            else:
                raise InvalidKey("invalid key: neither RSA nor EC")
            self._private = key
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.key_id = hashlib.sha256(spki).hexdigest()
        else:
            body, end = _der_tlv(der, 0, 0x30)
            if end != len(der):
                raise InvalidKey("invalid key: trailing bytes after the HPKE private key")
            version, at = _der_tlv(body, 0, 0x02)
            kem, at = _der_tlv(body, at, 0x02)
            seed, at = _der_tlv(body, at, 0x04)
            public, at = _der_tlv(body, at, 0x04)
            kem_id = int.from_bytes(kem, "big")
            if (
                at != len(body)
                or version != b"\x01"
                or kem_id not in _HYBRID_KEMS
                or len(seed) != 32
                or len(public) != _HYBRID_PUBLIC_LEN[kem_id]
                or kem != _der_int(kem_id)[2:]
            ):
                raise InvalidKey("invalid key: not a keyserver HPKE private key")
            self.kind = "hybrid-pq"
            self.bits = _HYBRID_KEMS[kem_id][1]
            self._hybrid = (kem_id, seed, public)
            hpke_public = _der_int(kem_id) + _der_octets(public)
            self.key_id = hashlib.sha256(b"\x30" + _der_len(len(hpke_public)) + hpke_public).hexdigest()

    def __repr__(self) -> str:
        return f"<Kek {self.kind} {self.key_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Kek) and hmac.compare_digest(self.fingerprint, other.fingerprint)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def unwrap(self, record: bytes) -> bytes:
        """The DEK of a stored record (``get_wrapped``), unwrapped here: the
        KEK never leaves this machine. Every field of the record is checked
        against this KEK first (FORMAT.md), as the Rust client does.

        Raises :class:`StorageError` (code 5) for a corrupt record or one of
        another kind of key, :class:`UnwrapFailed` (code 3) when the KEK does
        not open it, :class:`PolicyViolation` (code 4) for a hybrid KEK, whose
        KEM the ``cryptography`` package does not offer (use server-side
        unwrap, the default).
        """
        w, a, wrapped = parse_record(record, self.key_id)
        dek_len = DEK_LEN[a]
        corrupt = StorageError(f"corrupt record for key {self.key_id}")
        expected = -(-self.bits // 8) if w == _WRAP_RSA else _ENC_LEN.get(w, -1) + dek_len + 16
        if len(wrapped) != expected:
            raise corrupt
        if self.security_bits() < dek_len * 8:
            raise PolicyViolation(
                f"the KEK of key {self.key_id} ({self.security_bits()} bits) is weaker than its DEK"
            )
        if self.kind == "rsa":
            if w != _WRAP_RSA or _record_bits(record) != self.bits:
                raise StorageError(f"corrupt record for key {self.key_id}: not an RSA record of this key")
            try:
                dek = self._private.decrypt(  # type: ignore[union-attr]
                    wrapped,
                    padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
                )
            except ValueError:
                raise UnwrapFailed(f"unwrap failed for key {self.key_id}") from None
        elif self.kind == "ec":
            if w not in _WRAP_EC or _WRAP_EC[w][1] != self.bits or _record_bits(record) != self.bits:
                raise StorageError(f"corrupt record for key {self.key_id}: not an EC record of this key")
            dek = _hpke_open(w, a, wrapped, self._private, self.key_id)
        else:
            raise PolicyViolation(
                "client-side unwrap of hybrid-pq KEKs needs HPKE with MLKEM768-P256 or "
                "MLKEM1024-P384 from a seed, which the cryptography package does not offer: "
                "use server-side unwrap (the default)"
            )
        if len(dek) != dek_len:
            raise corrupt
        return dek

    def security_bits(self) -> int:
        """The KEK's security strength (SP 800-57 Part 1, Table 2)."""
        if self.kind == "rsa":
            return 256 if self.bits >= 15360 else 192 if self.bits >= 7680 else 128 if self.bits >= 3072 else 112
        if self.kind == "ec":
            return {256: 128, 384: 192, 521: 256}[self.bits]
        return 128 if self.bits == 768 else 256


def _record_bits(record: bytes) -> int:
    return struct.unpack(">H", record[48:50])[0]


def parse_record(record: bytes, key_id: str) -> Tuple[int, int, bytes]:
    """Checks a stored record (FORMAT.md) field by field and returns its wrap
    algorithm, DEK algorithm and wrapped DEK."""
    corrupt = StorageError(f"corrupt record for key {key_id}")
    if len(record) < 52 + 32 or record[:4] != RECORD_MAGIC or record[4] != 1 or record[7] != 0:
        raise corrupt
    w, a = record[5], record[6]
    (n,) = struct.unpack(">H", record[50:52])
    if len(record) != 52 + n + 32 or a not in DEK_LEN:
        raise corrupt
    if not hmac.compare_digest(hashlib.sha256(record[: 52 + n]).digest(), record[52 + n :]):
        raise corrupt
    if record[16:48].hex() != key_id:
        raise corrupt
    bits = struct.unpack(">H", record[48:50])[0]
    if w == _WRAP_RSA and not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise corrupt
    if w != _WRAP_RSA and w not in _WRAP_EC and w not in _WRAP_HYBRID:
        raise corrupt
    return w, a, record[52 : 52 + n]


def _hpke_open(w: int, a: int, wrapped: bytes, private: object, key_id: str) -> bytes:
    try:
        from cryptography.hazmat.primitives import hpke
    except ImportError:  # cryptography before HPKE
        raise PolicyViolation(
            "client-side unwrap of EC KEKs needs HPKE (cryptography 47 or later): "
            "use server-side unwrap (the default)"
        ) from None
    kem, kdf, aead = {
        2: (hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM),
        3: (hpke.KEM.P384, hpke.KDF.HKDF_SHA384, hpke.AEAD.AES_256_GCM),
        4: (hpke.KEM.P521, hpke.KDF.HKDF_SHA512, hpke.AEAD.AES_256_GCM),
    }[w]
    try:
        return bytes(
            hpke.Suite(kem, kdf, aead).decrypt(wrapped, private, info=RECORD_INFO + bytes([w, a]))
        )
    except Exception:
        raise UnwrapFailed(f"unwrap failed for key {key_id}") from None


def as_kek(kek: KekLike) -> Kek:
    """``kek`` as a :class:`Kek` (a PEM string or bytes is parsed)."""
    return kek if isinstance(kek, Kek) else Kek(kek)


def is_key_id(value: str) -> bool:
    """Whether ``value`` is a key id: 64 lowercase hex digits."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
