"""The formats of docs/FORMAT.md against the known-answer vectors the Rust
suites are checked with (testing/vectors/), and their failure modes."""

import io
import json
import os
import pathlib

import pytest

from keyserver_client import DecryptionFailed, MalformedCiphertext
from keyserver_client import formats

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "testing" / "vectors"


def vectors(name):
    return json.loads((VECTORS / name).read_text())


def h(case, field):
    return bytes.fromhex(case[field])


@pytest.mark.parametrize("case", vectors("envelope_v1.json"), ids=lambda c: c["name"])
def test_envelope_v1_vectors(case):
    sealed = formats.seal_v1(
        h(case, "dek"), case["key_id"], h(case, "context"), h(case, "plaintext"), h(case, "salt"), h(case, "nonce")
    )
    assert sealed == h(case, "envelope")
    assert formats.open_envelope(h(case, "dek"), h(case, "context"), sealed) == h(case, "plaintext")


@pytest.mark.parametrize("case", vectors("envelope_v2.json"), ids=lambda c: c["name"])
def test_envelope_v2_vectors(case):
    session = formats.Session(h(case, "dek"), case["key_id"], h(case, "salt"), case["counter"])
    sealed = session.seal(h(case, "context"), h(case, "plaintext"))
    assert sealed == h(case, "envelope")
    assert formats.open_envelope(h(case, "dek"), h(case, "context"), sealed) == h(case, "plaintext")


@pytest.mark.parametrize("case", vectors("stream_v1.json"), ids=lambda c: c["name"])
def test_stream_vectors(case):
    out = io.BytesIO()
    n = formats.encrypt_stream(
        h(case, "dek"), case["key_id"], io.BytesIO(h(case, "plaintext")), out, case["chunk"], h(case, "salt"), h(case, "prefix")
    )
    assert n == len(h(case, "plaintext"))
    assert out.getvalue() == h(case, "stream")
    opened = io.BytesIO()
    formats.decrypt_stream(h(case, "dek"), io.BytesIO(out.getvalue()), opened)
    assert opened.getvalue() == h(case, "plaintext")


def test_every_changed_byte_of_an_envelope_is_refused():
    dek, key_id = os.urandom(16), os.urandom(32).hex()
    for sealed in (
        formats.seal_v1(dek, key_id, b"ctx", b"Stephan Richter"),
        formats.Session(dek, key_id).seal(b"ctx", b"Stephan Richter"),
    ):
        for i in range(len(sealed)):
            changed = bytearray(sealed)
            changed[i] ^= 0x01
            with pytest.raises((DecryptionFailed, MalformedCiphertext)):
                formats.open_envelope(dek, b"ctx", bytes(changed))
        with pytest.raises(DecryptionFailed):
            formats.open_envelope(dek, b"other", sealed)
        with pytest.raises(DecryptionFailed):
            formats.open_envelope(os.urandom(16), b"ctx", sealed)
        for cut in (0, 5, 96, len(sealed) - 1):
            with pytest.raises((DecryptionFailed, MalformedCiphertext)):
                formats.open_envelope(dek, b"ctx", sealed[:cut])


def test_a_v2_session_numbers_its_messages_and_commits_to_the_dek():
    dek, key_id = os.urandom(32), os.urandom(32).hex()
    session = formats.Session(dek, key_id)
    first, second = session.seal(b"", b"a"), session.seal(b"", b"b")
    assert first[3] == second[3] == formats.VERSION_2
    assert first[37:69] == second[37:69]  # one salt
    assert first[69:81] == bytes(12) and second[69:81] == (1).to_bytes(12, "big")
    assert session.sealed == 2
    # A forged commitment is refused before AES-GCM runs.
    forged = bytearray(first)
    forged[81] ^= 1
    with pytest.raises(DecryptionFailed):
        formats.open_envelope(dek, b"", bytes(forged))


def test_a_stream_cut_reordered_or_extended_is_refused():
    dek, key_id = os.urandom(16), os.urandom(32).hex()
    data = os.urandom(3 * 16 + 5)
    out = io.BytesIO()
    formats.encrypt_stream(dek, key_id, io.BytesIO(data), out, chunk=16)
    sealed = out.getvalue()
    body = sealed[80:]
    chunks = [body[i : i + 32] for i in range(0, len(body), 32)]
    header = sealed[:80]
    bad = [
        header + b"".join(chunks[:-1]),  # cut at a chunk boundary
        header + chunks[1] + chunks[0] + b"".join(chunks[2:]),  # reordered
        sealed + chunks[0],  # extended
        sealed[:-1],  # truncated
    ]
    for stream in bad:
        with pytest.raises(DecryptionFailed):
            formats.decrypt_stream(dek, io.BytesIO(stream), io.BytesIO())
    opened = io.BytesIO()
    formats.decrypt_stream(dek, io.BytesIO(sealed), opened)
    assert opened.getvalue() == data


def test_a_stream_of_an_exact_number_of_chunks_ends_with_a_full_last_chunk():
    dek, key_id = os.urandom(24), os.urandom(32).hex()
    for size in (0, 16, 32):
        out = io.BytesIO()
        formats.encrypt_stream(dek, key_id, io.BytesIO(bytes(size)), out, chunk=16)
        # An empty input is one empty last chunk; 16 bytes one full last chunk.
        assert len(out.getvalue()) == {0: 80 + 16, 16: 80 + 32, 32: 80 + 64}[size]
        opened = io.BytesIO()
        formats.decrypt_stream(dek, io.BytesIO(out.getvalue()), opened)
        assert opened.getvalue() == bytes(size)
