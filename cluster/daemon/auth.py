"""The door of the daemon's TCP listener.

``/v1`` is the front door's (``frontdoor``: its own keys). Everything else (the API, the
dashboard, the metrics) needs the daemon's token, as ``Authorization: Bearer TOKEN`` or,
for a browser, the cookie ``GET /login?token=TOKEN`` sets (HttpOnly, SameSite=Strict) —
unless no token is configured, which the configuration allows on loopback only. Tokens are
compared in constant time. The Unix socket needs none of this: its permissions are the
authentication.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "clusterctl_token"


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    def __init__(self, app: App, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _given(self, scope: Scope) -> bytes:
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        bearer = headers.get(b"authorization", b"")
        if bearer.startswith(b"Bearer "):
            return bearer.removeprefix(b"Bearer ")
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:
            return b""
        morsel = cookies.get(COOKIE)
        return morsel.value.encode() if morsel else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or self.token is None:
            await self.app(scope, receive, send)
            return
        if path == "/v1" or path.startswith("/v1/"):
            await self.app(scope, receive, send)  # the front door checks its own keys
            return
        if path == "/login":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0].encode()
            if hmac.compare_digest(given, self.token):
                cookie = f"{COOKIE}={given.decode()}; HttpOnly; SameSite=Strict; Path=/"
                headers = [(b"location", b"/"), (b"set-cookie", cookie.encode())]
                await _answer(send, 303, headers, b"")
                return
        elif hmac.compare_digest(self._given(scope), self.token):
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await _answer(send, 401, headers, b'{"detail":"token required"}')
