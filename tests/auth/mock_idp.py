"""oidc-provider-mock as a real IdP on loopback, with a small WSGI front that can misbehave on purpose.

`TokenForger` sits in front of the mock's WSGI app (same server, same issuer URL) and, per test:
- records every token request (to check the PKCE verifier Attest sends);
- rewrites query parameters of the authorization request (`rewrite_authorize={"nonce": "other"}`:
  the mock then issues a token for a nonce this sign-in never asked for);
- re-signs the ID token the mock issued, after changing its claims (`forge=lambda claims: ...`), with a
  key it publishes in place of the mock's at /jwks (so only the claims are wrong), or with a key it
  does not publish (`rogue=True`, same key id: the signature is wrong).
Without any of these it passes everything through untouched: the mock signs and publishes its keys.

`Flow` drives the browser's side of the round trip with a Flask test client for Attest and httpx for
the IdP: start at /login/oidc, post the mock's authorization form as `sub`, come back to the callback.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


def _b64json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class TokenForger:
    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.url = ""
        self.key = RSAKey.generate_key(2048, parameters={"kid": "forger-1"}, private=True)
        self.rogue_key = RSAKey.generate_key(2048, parameters={"kid": "forger-1"}, private=True)
        self.forge: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.rogue = False
        self.rewrite_authorize: dict[str, str] = {}
        self.token_requests: list[dict[str, list[str]]] = []

    @property
    def active(self) -> bool:
        return self.forge is not None or self.rogue

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/oauth2/authorize" and self.rewrite_authorize:
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            for name, value in self.rewrite_authorize.items():
                query[name] = [value]
            environ["QUERY_STRING"] = urlencode(query, doseq=True)
        if path == "/jwks" and self.active:
            body = json.dumps(KeySet([self.key]).as_dict(private=False)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/oauth2/token" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            self.token_requests.append(parse_qs(raw.decode()))
            environ["wsgi.input"] = io.BytesIO(raw)
            if self.active:
                return self._resign(environ, start_response)
        return self.app(environ, start_response)

    def _resign(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            seen["status"], seen["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self.app(environ, capture))
        if seen["status"].startswith("200"):
            token = json.loads(body)
            header_part, payload_part, _sig = token["id_token"].split(".")
            claims = _b64json(payload_part)
            if self.forge is not None:
                claims = self.forge(claims)
            header = {"alg": _b64json(header_part)["alg"], "kid": self.key.kid, "typ": "JWT"}
            token["id_token"] = jwt.encode(header, claims, self.rogue_key if self.rogue else self.key)
            body = json.dumps(token).encode()
        headers = [(k, v) for k, v in seen["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(seen["status"], headers)
        return [body]

    # the mock's own API -----------------------------------------------------------------------------
    def set_user(self, sub: str, **claims: Any) -> None:
        """Claims the mock puts in the ID token of `sub` (PUT /users/<sub>)."""
        response = httpx.put(f"{self.url}/users/{sub}", json=claims, timeout=10)
        assert response.status_code == 204, response.text

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"


@dataclass
class Flow:
    """One browser's SSO round trip against Attest (Flask test client) and the mock IdP (httpx)."""

    client: Any
    idp: TokenForger
    authorize_url: str = ""
    callback_url: str = ""
    history: list[str] = field(default_factory=list)

    def start(self, next_url: str | None = None) -> str:
        response = self.client.get("/login/oidc", query_string={"next": next_url} if next_url else None)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        self.authorize_url = response.headers["Location"]
        assert self.authorize_url.startswith(self.idp.url + "/oauth2/authorize?"), self.authorize_url
        return self.authorize_url

    def authorize(self, sub: str, deny: bool = False) -> str:
        """The person's part at the IdP: its form, then 'Authorize' as `sub` (or 'Deny')."""
        with httpx.Client(timeout=10) as http:
            form = http.get(self.authorize_url)
            assert form.status_code == 200 and 'name="sub"' in form.text, form.text[:500]
            answer = http.post(self.authorize_url, data={"action": "deny"} if deny else {"sub": sub})
        assert answer.status_code == 302, answer.text[:500]
        self.callback_url = answer.headers["Location"]
        return self.callback_url

    def callback(self, url: str | None = None) -> Any:
        parts = urlsplit(url or self.callback_url)
        assert parts.path == "/login/oidc/callback", parts.path
        return self.client.get(parts.path + "?" + parts.query)

    def sign_in(self, sub: str, next_url: str | None = None) -> Any:
        self.start(next_url)
        self.authorize(sub)
        return self.callback()

    def query(self, url: str | None = None) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(url or self.authorize_url).query).items()}


@dataclass
class KeepAliveServer:
    url: str
    open_connections: list[Any] = field(default_factory=list)

    def drop_connections(self) -> None:
        """Close every kept-alive connection from the server's side (an IdP's idle time-out)."""
        for sock in list(self.open_connections):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def serve_keep_alive(app: Callable[..., Any]) -> Iterator[KeepAliveServer]:
    """Serve a WSGI app on loopback with HTTP/1.1 keep-alive, as real IdPs answer (Werkzeug's server, which
    the sandbox uses, closes every connection)."""
    served = KeepAliveServer("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            served.open_connections.append(self.connection)

        def finish(self) -> None:
            served.open_connections.remove(self.connection)
            super().finish()

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path, _, query = self.path.partition("?")
            environ = {
                "REQUEST_METHOD": self.command, "PATH_INFO": unquote(path), "QUERY_STRING": query,
                "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(self.server.server_address[1]),
                "SERVER_PROTOCOL": self.protocol_version, "REMOTE_ADDR": self.client_address[0],
                "REMOTE_PORT": self.client_address[1], "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
                "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": True,
                "wsgi.multiprocess": False, "wsgi.run_once": False,
            }
            for name, value in self.headers.items():
                key = name.upper().replace("-", "_")
                if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                    environ["HTTP_" + key] = value
            answer: list[Any] = []
            chunks = app(environ, lambda status, headers, exc_info=None: answer.extend((status, headers)))
            data = b"".join(chunks)
            code, _, reason = answer[0].partition(" ")
            self.send_response_only(int(code), reason)
            for name, value in answer[1]:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
