"""Byte compatibility with the Rust client, both ways: what Python seals
opens with `keyserver decrypt` (the Rust KeyClient), and what `keyserver
encrypt` seals opens here, for messages (with and without a context) and
streams; and data an earlier build wrote (testing/fixtures/compat) opens."""

import io
import os
import shutil
import subprocess

import pytest

from keyserver_client import KeyClient
from conftest import REPO, Server, keyserver_bin


def cli(server, *args, input=None):
    result = subprocess.run(
        [keyserver_bin(), *args, "--server", server.url],
        input=input,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.fixture(params=["rsa", "ec", "hybrid-pq"])
def kek_file(request, server, tmp_path):
    kek = KeyClient(server.url).generate(128, request.param)
    path = tmp_path / "kek.pem"
    path.write_text(kek)
    return kek, str(path)


@pytest.mark.parametrize("context", [None, b"row 42"])
@pytest.mark.parametrize("envelope", [1, 2])
def test_python_messages_open_with_the_rust_client(server, kek_file, context, envelope, tmp_path):
    kek, path = kek_file
    sealed = KeyClient(server.url, envelope=envelope).encrypt(kek, b"Stephan Richter", context=context)
    (tmp_path / "m").write_bytes(sealed)
    args = ["decrypt", "--kek", path, "--in", str(tmp_path / "m")]
    if context is not None:
        args += ["--context", context.decode()]
    assert cli(server, *args) == b"Stephan Richter"


@pytest.mark.parametrize("context", [None, "row 42"])
def test_rust_messages_open_in_python(server, kek_file, context):
    kek, path = kek_file
    args = ["encrypt", "--message", "--kek", path]
    if context is not None:
        args += ["--context", context]
    sealed = cli(server, *args, input=b"Stephan Richter")
    assert sealed[:4] == b"KSE\x02"
    opened = KeyClient(server.url).decrypt(kek, sealed, context=None if context is None else context.encode())
    assert opened == b"Stephan Richter"


def test_streams_both_ways(server, kek_file, tmp_path):
    kek, path = kek_file
    data = os.urandom(2 * 65536 + 123)
    client = KeyClient(server.url)
    sealed = io.BytesIO()
    client.encrypt_stream(kek, io.BytesIO(data), sealed)
    assert cli(server, "decrypt", "--kek", path, input=sealed.getvalue()) == data
    rust_sealed = cli(server, "encrypt", "--kek", path, input=data)
    opened = io.BytesIO()
    client.decrypt_stream(kek, io.BytesIO(rust_sealed), opened)
    assert opened.getvalue() == data


def test_data_an_earlier_build_wrote_opens(tmp_path):
    fixtures = REPO / "testing" / "fixtures" / "compat"
    store = tmp_path / "store"
    shutil.copytree(fixtures / "store", store)
    for root, dirs, files in os.walk(store):
        os.chmod(root, 0o700)
        for f in files:
            os.chmod(os.path.join(root, f), 0o600)
    server = Server(tmp_path, "--suite", "rustcrypto", "--storage", f"file:{store}")
    try:
        pattern = bytes(i % 251 for i in range(70_000))
        for alg in ("rsa", "ec", "hybrid"):
            kek = (fixtures / f"{alg}.kek.pem").read_text()
            for unwrap in ("server", "client") if alg != "hybrid" else ("server",):
                client = KeyClient(server.url, unwrap=unwrap)
                message = (fixtures / f"{alg}.message").read_bytes()
                assert message[3] == 1
                assert client.decrypt(kek, message) == b"Stephan Richter"
                with_context = (fixtures / f"{alg}.message-context").read_bytes()
                assert client.decrypt(kek, with_context, context=b"row 42") == b"Stephan Richter"
                opened = io.BytesIO()
                client.decrypt_stream(kek, io.BytesIO((fixtures / f"{alg}.stream").read_bytes()), opened)
                assert opened.getvalue() == pattern
    finally:
        server.stop()
