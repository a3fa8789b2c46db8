"""The wire protocols (docs/PROTOCOL.md): XML-RPC at ``/RPC2`` and JSON-RPC
2.0 at ``/jsonrpc``, over HTTP or HTTPS, with bearer tokens, a CA of your
own and client certificates, and failover across several servers.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import itertools
import json
import socket
import ssl
import urllib.parse
import xmlrpc.client
from typing import Any, List, Optional, Sequence

from .errors import KeyServerError, PolicyViolation, TransportError, from_code

# Methods that change state: resent to another server only when the request
# certainly never left (a refused connection, an unknown host).
CHANGES = frozenset(
    {"generate", "rotate", "suspend", "resume", "compromised", "destroy", "cancel_destroy"}
)
# Methods whose request or answer holds key material.
SECRET = frozenset({"generate", "get_key", "rotate"})
# State changes whose target may be the KEK itself (then it is key material).
TARGETED = frozenset({"suspend", "resume", "compromised", "destroy", "cancel_destroy"})


def _is_key_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class NotSent(TransportError):
    """The request never reached the server (connection refused, unknown
    host): safe to send to another one, even a state change."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ssl_context(
    ca_cert: Optional[str] = None, client_cert: Optional[str] = None, client_key: Optional[str] = None
) -> ssl.SSLContext:
    """A TLS client context: the system's roots, or ``ca_cert`` alone; a
    client certificate for mutual TLS if given."""
    context = ssl.create_default_context(cafile=ca_cert)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


class Transport:
    """One server, one protocol. :meth:`call` sends a method and returns its
    result, or raises the :class:`KeyServerError` of the server's code."""

    protocol = ""
    default_path = "/"

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        context: Optional[ssl.SSLContext] = None,
        timeout: float = 30.0,
        insecure: bool = False,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        # Credentials in the URL (https://app:TOKEN@host) become the token
        # and never appear in the URL this client shows or puts in errors.
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise PolicyViolation(f"not a keyserver URL (http:// or https://, a valid port): {shown!r}")
        self.url = shown
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path if parts.path not in ("", "/") else self.default_path
        if parts.username is not None and token is None:
            token = urllib.parse.unquote(parts.password or "")
        self.token = token
        self.context = context if context is not None else (ssl_context() if self.scheme == "https" else None)
        self.timeout = timeout
        self.plain_off_loopback = self.scheme == "http" and not _is_loopback(self.host) and not insecure

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url!r}>"

    def call(self, method: str, *params: Any) -> Any:
        carries_kek = method in SECRET or (method in TARGETED and params and not _is_key_id(params[0]))
        if carries_kek and self.plain_off_loopback:
            raise PolicyViolation(
                f"refusing to send key material over plain http:// to {self.host} "
                "(use https://, or insecure=True behind a TLS-terminating proxy)"
            )
        return self._call(method, list(params))

    def _call(self, method: str, params: List[Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _post(self, body: bytes, content_type: str) -> "tuple[int, bytes]":
        connection = self._connection()
        try:
            try:
                connection.connect()
            except (ConnectionRefusedError, socket.gaierror) as e:
                raise NotSent(f"cannot reach the key server at {self.url}: {e}") from e
            except ssl.SSLError as e:
                raise TransportError(f"TLS with the key server at {self.url} failed: {e}") from e
            except OSError as e:
                raise TransportError(f"cannot reach the key server at {self.url}: {e}") from e
            headers = {"Content-Type": content_type, "Accept": content_type}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as e:
                raise TransportError(f"the key server at {self.url} did not answer: {e}") from e
        finally:
            connection.close()


class XmlRpc(Transport):
    """XML-RPC (``/RPC2``)."""

    protocol = "xmlrpc"
    default_path = "/RPC2"

    def _call(self, method: str, params: List[Any]) -> Any:
        wire = [xmlrpc.client.Binary(p) if isinstance(p, (bytes, bytearray)) else p for p in params]
        body = xmlrpc.client.dumps(tuple(wire), method, encoding="utf-8").encode("utf-8")
        status, answer = self._post(body, "text/xml")
        if status != 200:
            raise TransportError(f"the key server at {self.url} answered HTTP {status} to {method}")
        try:
            (result,), _ = xmlrpc.client.loads(answer, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            if not isinstance(fault.faultCode, int):
                raise TransportError(f"the key server's answer to {method} does not fit the protocol") from None
            raise from_code(fault.faultCode, str(fault.faultString)) from None
        except Exception as e:
            raise TransportError(f"the key server's answer to {method} does not fit the protocol") from e
        return result


class JsonRpc(Transport):
    """JSON-RPC 2.0 (``/jsonrpc``). Binary values travel as base64 strings."""

    protocol = "jsonrpc"
    default_path = "/jsonrpc"
    _ids = itertools.count(1)

    def _call(self, method: str, params: List[Any]) -> Any:
        wire = [base64.b64encode(p).decode() if isinstance(p, (bytes, bytearray)) else p for p in params]
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": wire}
        status, answer = self._post(json.dumps(request).encode(), "application/json")
        try:
            reply = json.loads(answer)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise TransportError(f"the key server at {self.url} answered HTTP {status} to {method}, not JSON-RPC")
        if "error" in reply:
            error = reply["error"]
            if not isinstance(error, dict) or not isinstance(error.get("code"), int):
                raise TransportError(f"the key server's answer to {method} does not fit the protocol")
            raise from_code(error["code"], str(error.get("message", "")))
        if "result" not in reply:
            raise TransportError(f"the key server's answer to {method} does not fit the protocol")
        result = reply["result"]
        try:
            if method == "get_key":
                return base64.b64decode(result, validate=True)
            if method == "get_wrapped":
                return {**result, "record": base64.b64decode(result["record"], validate=True)}
        except (ValueError, TypeError, KeyError) as e:
            raise TransportError(f"the key server's answer to {method} does not fit the protocol") from e
        return result


class Failover:
    """Several servers sharing one storage. Reads move to the next server on
    a transport failure, a storage failure (code 5) or a busy server (code
    12); a state change moves only when the request certainly never left
    (:class:`NotSent`) or the server answered that it did nothing (code 12:
    at a limit, or cut off from its storage), so nothing is done twice. The
    server that answered last is tried first next time."""

    def __init__(self, transports: Sequence[Transport]) -> None:
        if not transports:
            raise PolicyViolation("no key server URL")
        self.transports = list(transports)
        self._first = 0

    def call(self, method: str, *params: Any) -> Any:
        count = len(self.transports)
        last: Optional[KeyServerError] = None
        for step in range(count):
            index = (self._first + step) % count
            try:
                result = self.transports[index].call(method, *params)
            except NotSent as e:
                last = e
                continue
            except KeyServerError as e:
                # As the Rust client: a read moves on after a transport
                # failure, a storage failure (a server cut off from the
                # database) or a busy server; a change only if never sent,
                # or if the server did nothing (busy).
                retry = (12,) if method in CHANGES else (5, 11, 12)
                if e.code not in retry:
                    raise
                last = e
                continue
            self._first = index
            return result
        assert last is not None
        raise last
