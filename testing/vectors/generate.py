#!/usr/bin/env python3
"""Writes the known-answer vectors for keyserver's formats, independently of
keyserver itself: HKDF-SHA256 and AES-GCM come from pyca/cryptography, the
byte layouts are re-typed here from docs/FORMAT.md. Run it from this folder:

    python3 generate.py    # rewrites envelope_v1.json, envelope_v2.json, stream_v1.json, record_v1.json

The Rust tests (the cipher kit, src/testing/cipher.rs, and tests/conformance/formats.rs) check that keyserver produces and
accepts exactly these bytes with every cipher suite.
"""
import hashlib
import json
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALG = {16: 1, 24: 2, 32: 3}


def pattern(n, start):
    return bytes((start + 7 * i) % 256 for i in range(n))


def envelope(dek, key_id, salt, nonce, context, plaintext):
    alg = ALG[len(dek)]
    header = b"KSE" + bytes([1, alg]) + key_id + salt + nonce
    key = HKDF(hashes.SHA256(), len(dek), salt, b"keyserver envelope v1" + bytes([alg])).derive(dek)
    return header + AESGCM(key).encrypt(nonce, plaintext, header + context)


def envelope_cases():
    cases = []
    for n, (dek_len, context, plaintext) in enumerate([
        (16, b"", b"Stephan Richter"),
        (16, b"", b""),
        (16, b"tenant=acme;table=users", b"Stephan Richter"),
        (24, b"", b"Stephan Richter"),
        (24, b"ctx", bytes(range(256)) * 5),
        (32, b"", b"x"),
        (32, b"user=42", b"The quick brown fox jumps over the lazy dog"),
    ]):
        dek = pattern(dek_len, 1 + n)
        key_id = hashlib.sha256(b"kek %d" % n).digest()
        salt = pattern(32, 100 + n)
        nonce = pattern(12, 200 + n)
        cases.append({
            "name": "case %d: AES-%d, %d-byte plaintext, %d-byte context"
                    % (n, dek_len * 8, len(plaintext), len(context)),
            "dek": dek.hex(),
            "key_id": key_id.hex(),
            "salt": salt.hex(),
            "nonce": nonce.hex(),
            "context": context.hex(),
            "plaintext": plaintext.hex(),
            "envelope": envelope(dek, key_id, salt, nonce, context, plaintext).hex(),
        })
    return cases


def envelope_v2(dek, key_id, salt, counter, context, plaintext):
    alg = ALG[len(dek)]
    key = HKDF(hashes.SHA256(), len(dek), salt, b"keyserver envelope v2 key" + bytes([alg])).derive(dek)
    commitment = HKDF(hashes.SHA256(), 32, salt,
                      b"keyserver envelope v2 commitment" + bytes([alg])).derive(dek)
    nonce = counter.to_bytes(12, "big")
    header = b"KSE" + bytes([2, alg]) + key_id + salt + nonce + commitment
    return header + AESGCM(key).encrypt(nonce, plaintext, header + context)


def envelope_v2_cases():
    cases = []
    for n, (dek_len, counter, context, plaintext) in enumerate([
        (16, 0, b"", b"Stephan Richter"),
        (16, 1, b"", b""),
        (16, 2, b"tenant=acme;table=users", b"Stephan Richter"),
        (24, 0, b"", b"Stephan Richter"),
        (24, 2**32 - 1, b"ctx", bytes(range(256)) * 5),
        (32, 0, b"", b"x"),
        (32, 123456789, b"user=42", b"The quick brown fox jumps over the lazy dog"),
    ]):
        dek = pattern(dek_len, 11 + n)
        key_id = hashlib.sha256(b"kek v2 %d" % n).digest()
        salt = pattern(32, 110 + n)
        cases.append({
            "name": "v2 case %d: AES-%d, message %d, %d-byte plaintext, %d-byte context"
                    % (n, dek_len * 8, counter, len(plaintext), len(context)),
            "dek": dek.hex(),
            "key_id": key_id.hex(),
            "salt": salt.hex(),
            "counter": counter,
            "context": context.hex(),
            "plaintext": plaintext.hex(),
            "envelope": envelope_v2(dek, key_id, salt, counter, context, plaintext).hex(),
        })
    return cases


def record(key_id, kek_bits, dek_len, created, wrapped):
    body = b"KSWR" + bytes([1, 1, ALG[dek_len], 0]) + struct.pack(">Q", created)
    body += key_id + struct.pack(">HH", kek_bits, len(wrapped)) + wrapped
    return body + hashlib.sha256(body).digest()


def record_cases():
    cases = []
    for n, (kek_bits, dek_len) in enumerate([(3072, 16), (7680, 24), (15360, 32), (2048, 16)]):
        key_id = hashlib.sha256(b"record %d" % n).digest()
        wrapped = pattern((kek_bits + 7) // 8, 50 + n)
        created = 1_700_000_000 + n
        cases.append({
            "name": "record %d: RSA-%d wrapping AES-%d" % (n, kek_bits, dek_len * 8),
            "key_id": key_id.hex(),
            "kek_bits": kek_bits,
            "strength": {16: 128, 24: 192, 32: 256}[dek_len],
            "created": created,
            "wrapped": wrapped.hex(),
            "record": record(key_id, kek_bits, dek_len, created, wrapped).hex(),
        })
    return cases


def stream(dek, key_id, salt, prefix, chunk, plaintext):
    alg = ALG[len(dek)]
    header = b"KSS" + bytes([1, alg]) + key_id + salt + prefix + struct.pack(">I", chunk)
    key = HKDF(hashes.SHA256(), len(dek), salt, b"keyserver stream v1" + bytes([alg])).derive(dek)
    chunks = [plaintext[i:i + chunk] for i in range(0, len(plaintext), chunk)] or [b""]
    out = header
    for i, part in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        nonce = prefix + struct.pack(">I", i) + bytes([last])
        out += AESGCM(key).encrypt(nonce, part, header)
    return out


def stream_cases():
    cases = []
    for n, (dek_len, chunk, length) in enumerate([
        (16, 16, 0), (16, 16, 16), (16, 16, 40), (24, 32, 100), (32, 65536, 70000),
    ]):
        dek = pattern(dek_len, 30 + n)
        key_id = hashlib.sha256(b"stream %d" % n).digest()
        salt = pattern(32, 130 + n)
        prefix = pattern(7, 230 + n)
        plaintext = pattern(length, 5 + n)
        cases.append({
            "name": "stream %d: AES-%d, chunk %d, %d bytes" % (n, dek_len * 8, chunk, length),
            "dek": dek.hex(),
            "key_id": key_id.hex(),
            "salt": salt.hex(),
            "prefix": prefix.hex(),
            "chunk": chunk,
            "plaintext": plaintext.hex(),
            "stream": stream(dek, key_id, salt, prefix, chunk, plaintext).hex(),
        })
    return cases


if __name__ == "__main__":
    with open("envelope_v1.json", "w") as f:
        json.dump(envelope_cases(), f, indent=1)
        f.write("\n")
    with open("envelope_v2.json", "w") as f:
        json.dump(envelope_v2_cases(), f, indent=1)
        f.write("\n")
    with open("stream_v1.json", "w") as f:
        json.dump(stream_cases(), f, indent=1)
        f.write("\n")
    with open("record_v1.json", "w") as f:
        json.dump(record_cases(), f, indent=1)
        f.write("\n")
