"""Real key servers for the tests: `keyserver serve` started per test
module, on loopback, on a port the kernel picks, stopped afterwards.

The binary is $KEYSERVER_BIN, or the workspace's target/{release,debug}/keyserver.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import pathlib
import re
import secrets
import subprocess
import threading
import time
from typing import List, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def keyserver_bin() -> str:
    if os.environ.get("KEYSERVER_BIN"):
        return os.environ["KEYSERVER_BIN"]
    for profile in ("release", "debug"):
        candidate = REPO / "target" / profile / "keyserver"
        if candidate.exists():
            return str(candidate)
    pytest.fail("no keyserver binary: build it (cargo build -p keyserver-cli) or set KEYSERVER_BIN")


class Server:
    """One `keyserver serve` process."""

    def __init__(self, tmp: pathlib.Path, *args: str) -> None:
        self.tmp = tmp
        command = [keyserver_bin(), "serve", "--listen", "127.0.0.1:0", "--kek-pool", "0", *args]
        if not any(a == "--storage" for a in args):
            command += ["--storage", "memory"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp
        )
        self.lines: List[str] = []
        # Drain its output on a thread, so it never blocks on a full pipe
        # and a server that never starts cannot hang the tests.
        threading.Thread(target=self._drain, daemon=True).start()
        address: Optional[str] = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline and self.process.poll() is None:
            for line in list(self.lines):
                match = re.search(r"keyserver listening on (https?://[^\s(]+)", line)
                if match:
                    address = match.group(1)
            time.sleep(0.02)
        if address is None:
            self.stop()
            pytest.fail("keyserver serve did not start:\n" + "".join(self.lines))
        #: The base URL, scheme included.
        self.url = address

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    s = Server(
        tmp,
        "--suite",
        "rustcrypto",
        "--allow-strengths",
        "128,192,256",
        "--allow-kek-algs",
        "rsa,ec,hybrid-pq",
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA, a server certificate for 127.0.0.1 and localhost,
    and a client certificate (CN=app), all made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tmp = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path):
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("keyserver test CA"))
        .issuer_name(name("keyserver test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn, san, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        "localhost",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_key, client_cert = leaf("app", None, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
    paths = {}
    for label, obj in (("ca", ca), ("server", server_cert), ("client", client_cert)):
        paths[label] = tmp / f"{label}.pem"
        paths[label].write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    for label, key in (("server_key", server_key), ("client_key", client_key)):
        paths[label] = tmp / f"{label}.pem"
        write_key(key, paths[label])
    return paths


def token_entry(name: str, methods: List[str], token: Optional[str] = None) -> "tuple[str, str]":
    """A fresh token and the auth file entry that grants it ``methods``."""
    token = token or secrets.token_hex(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    quoted = ", ".join(f'"{m}"' for m in methods)
    return token, f'[[principal]]\nname = "{name}"\ntoken_sha256 = "{digest}"\nmethods = [{quoted}]\n'


@pytest.fixture(autouse=True)
def _narrative_namespace(request, doctest_namespace):
    """The narrative doctest gets a running server's URL as `url`."""
    if request.node.name.endswith("test_narrative.txt"):
        server = request.getfixturevalue("server")
        doctest_namespace["url"] = server.url
