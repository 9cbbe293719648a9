"""A small async client for llama-server's HTTP API (health, props, completion, tokenize).

httpx errors are mapped to ``cluster.errors.HTTPError`` here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from pydantic import SecretStr

from cluster.errors import HTTPError


@dataclass(frozen=True)
class HealthState:
    status_code: int | None  # None: nothing answered
    body: str

    @property
    def ready(self) -> bool:
        return self.status_code == 200

    @property
    def loading(self) -> bool:
        return self.status_code == 503


KEEPALIVE_S = 2.0


class LlamaClient:
    def __init__(
        self, base_url: str, api_key: SecretStr | None = None, timeout_s: float | None = 30.0
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        self.base_url = base_url
        # llama-server drops idle connections after 5 s; through an ssh tunnel the close can
        # arrive after httpx picked the connection for the next request. Expire them first.
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying client, for streaming (``cluster.measure.request``)."""
        return self._http

    async def health(self) -> HealthState:
        """GET /health; a connection failure is a state (nothing answered), not an error."""
        try:
            response = await self._http.get("/health", timeout=5.0)
        except httpx.TransportError as exc:
            return HealthState(None, type(exc).__name__)
        return HealthState(response.status_code, response.text[:200])

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.RemoteProtocolError:
                # A pooled connection the server had already closed: these requests are
                # all idempotent, so one more on a fresh connection is safe.
                response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HTTPError(f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise HTTPError(
                f"{method} {self.base_url}{path}: HTTP {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            data = response.json()
        except ValueError as exc:
            raise HTTPError(f"{method} {self.base_url}{path}: answer is not JSON") from exc
        if not isinstance(data, dict):
            raise HTTPError(f"{method} {self.base_url}{path}: answer is not a JSON object")
        return data

    async def busy(self, timeout_s: float = 2.0) -> bool | None:
        """Is a slot processing a request (``GET /slots``)? None when the server does not
        answer in time: its task loop is stuck (a request hung on a stopped worker)."""
        try:
            response = await self._http.get("/slots", timeout=timeout_s)
            slots = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(slots, list):
            return None
        return any(isinstance(s, dict) and s.get("is_processing") for s in slots)

    async def props(self) -> dict[str, Any]:
        return await self._json("GET", "/props")

    async def completion(self, prompt: str, n_predict: int = 8, **extra: Any) -> dict[str, Any]:
        body = {"prompt": prompt, "n_predict": n_predict, "cache_prompt": False, **extra}
        return await self._json("POST", "/completion", json=body)

    async def tokenize(self, content: str, *, add_special: bool = True) -> list[int]:
        """POST /tokenize: the token ids of ``content``.

        With ``add_special`` (and the model's BOS on) the list starts with BOS: exactly the
        tokens the server evaluates for a /completion whose prompt is this string. Special
        token text (``<|im_start|>``) is parsed as the special token either way.
        """
        data = await self._json(
            "POST", "/tokenize", json={"content": content, "add_special": add_special}
        )
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            raise HTTPError(f"POST {self.base_url}/tokenize: answer has no list of token ids")
        return tokens

    async def apply_template(self, messages: list[dict[str, str]]) -> str:
        """POST /apply-template: the prompt the model's chat template makes of ``messages``,
        generation prompt (the opening of the assistant turn) included."""
        data = await self._json("POST", "/apply-template", json={"messages": messages})
        prompt = data.get("prompt")
        if not isinstance(prompt, str):
            raise HTTPError(f"POST {self.base_url}/apply-template: answer has no prompt string")
        return prompt

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LlamaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
