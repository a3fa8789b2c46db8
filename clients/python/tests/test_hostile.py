"""Bad input of every kind gets a typed KeyServerError, never another
exception, a secret in a message, or key material over plain HTTP; and the
cache stays right under threads and state changes."""

import hashlib
import http.server
import struct
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyserver_client import (
    InvalidKey,
    Kek,
    KeyClient,
    KeyServerError,
    PolicyViolation,
    StorageError,
    TransportError,
)


def pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_keys_the_server_would_refuse_are_refused_here():
    with pytest.raises(InvalidKey):
        Kek(pem(ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(InvalidKey):
        Kek(pem(rsa.generate_private_key(65537, 1024)))
    for bad in (None, 42, b"\xff\xfe", "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----"):
        with pytest.raises(InvalidKey):
            Kek(bad)
    kek = Kek("notes before\n" + pem(ec.generate_private_key(ec.SECP256R1())) + "notes after\n")
    assert kek.pem.startswith("-----BEGIN PRIVATE KEY-----") and "notes" not in kek.pem
    assert "BEGIN" not in repr(kek)


def test_a_forged_record_is_refused_field_by_field(server):
    client = KeyClient(server.url, unwrap="client")
    kek = Kek(client.generate())
    record = client._struct("get_wrapped", kek.key_id)["record"]
    assert client.get(kek.pem)

    def resealed(body):
        return body + hashlib.sha256(body).digest()

    n = struct.unpack(">H", record[50:52])[0]
    body = bytearray(record[: 52 + n])
    for change in (
        lambda b: b.__setitem__(slice(48, 50), struct.pack(">H", 1024)),  # KEK size
        lambda b: b.__setitem__(7, 1),  # reserved byte
        lambda b: b.__setitem__(5, 2),  # wrap algorithm: EC
        lambda b: b.__setitem__(6, 3),  # DEK algorithm: AES-256 under RSA-3072
    ):
        forged = bytearray(body)
        change(forged)
        with pytest.raises((StorageError, PolicyViolation)):
            kek.unwrap(resealed(bytes(forged)))
    with pytest.raises(StorageError):
        kek.unwrap(resealed(bytes(body[:-1])) )


def test_key_material_never_goes_over_plain_http_off_loopback():
    kek = pem(ec.generate_private_key(ec.SECP256R1()))
    client = KeyClient("http://192.0.2.1:8731", request_timeout=0.2)
    for call in (client.generate, lambda: client.get(kek), lambda: client.rotate(kek)):
        with pytest.raises(PolicyViolation):
            call()
    for change in (client.suspend, client.resume, client.compromised, client.destroy, client.cancel_destroy):
        with pytest.raises(PolicyViolation):
            change(kek)
        # By key id nothing secret is sent: it is tried (and cannot connect).
        with pytest.raises(TransportError):
            change(Kek(kek).key_id)


def test_a_token_in_the_url_is_never_shown():
    client = KeyClient("https://app:S3CRET@127.0.0.1:1/RPC2", request_timeout=0.5)
    assert "S3CRET" not in repr(client) and "S3CRET" not in client.url
    with pytest.raises(TransportError) as e:
        client.status()
    assert "S3CRET" not in str(e.value)
    with pytest.raises(PolicyViolation) as e:
        KeyClient("https://app:S3CRET@127.0.0.1:99999")
    assert "S3CRET" not in str(e.value)


class _Crafted(http.server.BaseHTTPRequestHandler):
    answer = b""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "text/xml"))
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def crafted():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Crafted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


XML = '<?xml version="1.0"?><methodResponse><params><param><value>{}</value></param></params></methodResponse>'
FAULT = (
    '<?xml version="1.0"?><methodResponse><fault><value><struct>'
    "<member><name>faultCode</name><value><string>x</string></value></member>"
    "<member><name>faultString</name><value><string>boom</string></value></member>"
    "</struct></value></fault></methodResponse>"
)


@pytest.mark.parametrize(
    "transport, answer",
    [
        ("xmlrpc", XML.format("<int>16</int>")),
        ("xmlrpc", XML.format("<int>2000000000</int>")),
        ("xmlrpc", XML.format("<string>x</string>")),
        ("xmlrpc", XML.format("<array><data></data></array>")),
        ("xmlrpc", FAULT),
        ("xmlrpc", "not xml"),
        ("jsonrpc", '{"jsonrpc": "2.0", "id": 1, "error": "boom"}'),
        ("jsonrpc", '{"jsonrpc": "2.0", "id": 1, "error": null}'),
        ("jsonrpc", '{"jsonrpc": "2.0", "id": 1, "error": {"code": null}}'),
        ("jsonrpc", '{"jsonrpc": "2.0", "id": 1, "error": {"code": "x"}}'),
        ("jsonrpc", '{"jsonrpc": "2.0", "id": 1, "result": [1, 2]}'),
        ("jsonrpc", '{"jsonrpc": "2.0", "id": 1, "result": "!!"}'),
        ("jsonrpc", "[]"),
    ],
)
def test_answers_that_do_not_fit_are_transport_errors(crafted, transport, answer):
    _Crafted.answer = answer.encode()
    client = KeyClient(f"http://127.0.0.1:{crafted.server_address[1]}", transport=transport)
    kek = pem(ec.generate_private_key(ec.SECP256R1()))
    for call in (
        client.status,
        client.generate,
        lambda: client.get(kek),
        lambda: client.describe(Kek(kek).key_id),
        lambda: list(client.iter_keys()),
        lambda: client.rotate(kek),
        lambda: client.suspend(kek),
        lambda: client.generate(alg="ec"),
    ):
        with pytest.raises(KeyServerError):
            call()


def test_threads_and_evictions_never_seal_under_a_wrong_key(server):
    client = KeyClient(server.url, cache_capacity=1)
    keks = [client.generate(128, "ec") for _ in range(3)]
    sealed = {k: [] for k in keks}
    errors = []

    def work(kek):
        try:
            for i in range(10):
                sealed[kek].append(client.encrypt(kek, b"message %d" % i))
                client.get(keks[(keks.index(kek) + 1) % 3])  # evicts
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in keks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fresh = KeyClient(server.url)
    for kek, messages in sealed.items():
        assert [fresh.decrypt(kek, m) for m in messages] == [b"message %d" % i for i in range(10)]


def test_a_state_change_drops_the_cached_dek(server):
    client = KeyClient(server.url)
    kek = client.generate()
    client.get(kek)
    assert kek in client._cache
    client.compromised(Kek(kek).key_id)
    assert kek not in client._cache


def test_concurrent_callers_never_seal_past_the_message_limit(server):
    client = KeyClient(server.url, max_messages=3)
    kek = client.generate(128, "ec")
    sealed = []
    lock = threading.Lock()

    def work():
        for _ in range(8):
            message = client.encrypt(kek, b"x")
            with lock:
                sealed.append(message)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_session = {}
    for message in sealed:
        per_session[message[37:69]] = per_session.get(message[37:69], 0) + 1
    assert len(sealed) == 32 and max(per_session.values()) <= 3, per_session


def test_a_message_above_the_byte_limit_still_seals_on_a_fresh_dek(server):
    client = KeyClient(server.url, max_bytes=10)
    kek = client.generate(128, "ec")
    client.get(kek)
    fetched = client._cache[kek][0]
    client.encrypt(kek, bytes(100))
    assert client._cache[kek][0] == fetched
    client.encrypt(kek, bytes(5))
    assert client._cache[kek][0] > fetched
