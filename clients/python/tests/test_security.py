"""TLS with a test CA, client certificates, tokens (argument, file,
environment), and failover across several server URLs."""

import pytest

from keyserver_client import KeyClient, NotPermitted, TransportError
from conftest import Server, token_entry


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    tmp = tmp_path_factory.mktemp("tls")
    app_token, app = token_entry("app", ["generate", "get_key", "status", "contains", "describe"])
    auth = tmp / "auth.toml"
    auth.write_text(app)
    server = Server(
        tmp, "--suite", "rustcrypto", "--tls-cert", str(pki["server"]), "--tls-key", str(pki["server_key"]), "--auth", str(auth)
    )
    assert server.url.startswith("https://")
    server.token = app_token
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    """Mutual TLS: a client certificate of the CA is required, and its
    subject names the principal."""
    tmp = tmp_path_factory.mktemp("mtls")
    auth = tmp / "auth.toml"
    auth.write_text('[[principal]]\nname = "app"\ntls_subject = "CN=app"\nmethods = ["generate", "get_key", "status"]\n')
    server = Server(
        tmp,
        "--suite",
        "rustcrypto",
        "--tls-cert",
        str(pki["server"]),
        "--tls-key",
        str(pki["server_key"]),
        "--client-ca",
        str(pki["ca"]),
        "--auth",
        str(auth),
    )
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["xmlrpc", "jsonrpc"])
def test_tls_with_a_test_ca_and_a_token(tls_server, pki, transport, tmp_path, monkeypatch):
    client = KeyClient(tls_server.url, transport=transport, ca_cert=str(pki["ca"]), token=tls_server.token)
    kek = client.generate()
    assert client.decrypt(kek, client.encrypt(kek, b"over TLS")) == b"over TLS"
    assert kek in client
    # The token from a file, and from the environment.
    token_file = tmp_path / "token"
    token_file.write_text(tls_server.token + "\n")
    assert len(KeyClient(tls_server.url, transport=transport, ca_cert=str(pki["ca"]), token_file=str(token_file)).get(kek)) == 16
    monkeypatch.setenv("KEYSERVER_TOKEN", tls_server.token)
    assert len(KeyClient(tls_server.url, transport=transport, ca_cert=str(pki["ca"])).get(kek)) == 16


@pytest.mark.parametrize("transport", ["xmlrpc", "jsonrpc"])
def test_callers_without_a_grant_are_refused(tls_server, pki, transport):
    anonymous = KeyClient(tls_server.url, transport=transport, ca_cert=str(pki["ca"]))
    assert anonymous.status()["suite"] == "rustcrypto"  # anonymous: status only
    with pytest.raises(NotPermitted) as e:
        anonymous.generate()
    assert e.value.code == 13
    wrong = KeyClient(tls_server.url, transport=transport, ca_cert=str(pki["ca"]), token="0" * 64)
    with pytest.raises(NotPermitted):
        wrong.status()


def test_a_client_certificate_identifies_its_principal(mtls_server, pki):
    with pytest.raises(TransportError):
        KeyClient(mtls_server.url, ca_cert=str(pki["ca"])).status()  # no certificate
    client = KeyClient(
        mtls_server.url,
        ca_cert=str(pki["ca"]),
        client_cert=str(pki["client"]),
        client_key=str(pki["client_key"]),
    )
    kek = client.generate()
    assert len(client.get(kek)) == 16


def test_a_server_the_ca_did_not_sign_is_refused(tls_server):
    with pytest.raises(TransportError) as e:
        KeyClient(tls_server.url).status()  # the system's roots only
    assert e.value.code == 11


@pytest.mark.parametrize("transport", ["xmlrpc", "jsonrpc"])
def test_failover_past_a_server_that_is_down(server, transport, tmp_path):
    dead = Server(tmp_path, "--suite", "rustcrypto")
    dead_url = dead.url
    dead.stop()
    client = KeyClient(f"{dead_url},{server.url}", transport=transport)
    assert repr(client) == f"<KeyClient '{dead_url},{server.url}'>"
    kek = client.generate()  # a change: moved on only because it never left
    assert client.decrypt(kek, client.encrypt(kek, b"failover")) == b"failover"
    assert kek in client
    with pytest.raises(TransportError):
        KeyClient(dead_url, transport=transport).status()


def test_failover_moves_a_change_only_past_a_server_that_did_nothing():
    from keyserver_client.errors import Busy, StorageError
    from keyserver_client.transport import Failover

    class Fake:
        def __init__(self, *answers):
            self.answers = list(answers)
            self.calls = 0

        def call(self, method, *params):
            self.calls += 1
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    # Busy (a server cut off from its storage): it did nothing, so even a
    # generate goes to the next server.
    cut, healthy = Fake(Busy("this server cannot reach its storage now")), Fake("kek")
    assert Failover([cut, healthy]).call("generate") == "kek"
    # A storage failure during a change: it may have been done; not moved.
    failed, other = Fake(StorageError("down")), Fake("kek")
    with pytest.raises(StorageError):
        Failover([failed, other]).call("generate")
    assert other.calls == 0
    # A read moves on after either.
    assert Failover([Fake(StorageError("down")), Fake(True)]).call("contains", "00") is True
