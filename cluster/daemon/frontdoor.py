"""The front door: one stable OpenAI-compatible endpoint (``/v1/*``) through the daemon.

Clients point at the daemon instead of llama-server: their requests are forwarded (httpx)
to the llama-server the daemon serves, streams passed through chunk by chunk as they
arrive. While the daemon restarts the RPC group or a job has the cluster, new requests
wait in a bounded queue (``queue_size`` requests, ``queue_wait_s`` each) and go on once it
serves again; past either bound they get 503 with ``Retry-After``. A request in flight
when llama-server dies ends with a clear error (a 502, or an error event in a stream):
never a hang, since the daemon's watch restarts a hung group and that closes the
connection.

Front-door keys (``keys_env``, ``key_file``) are checked in constant time, so
llama-server can stay on loopback with a key of its own (the profile's, added here). Each
request's tokens, TTFT and rates (llama-server's ``timings`` / ``usage``) go to
``ctx.usage`` for the dashboard and to Prometheus.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cluster.daemon.context import DaemonContext, log
from cluster.daemon.models import ServingState
from cluster.daemon.supervisor import Supervisor
from cluster.daemon.usage import RequestRecord, figures
from cluster.errors import ConfigError

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
# Times a request that got no answer at all is sent again once the group serves again.
RESENDS = 2


def load_keys(ctx: DaemonContext) -> list[str]:
    """The front door's keys from the environment and the key file (empty: open)."""
    config = ctx.config
    keys: list[str] = []
    if config.keys_env is not None:
        value = ctx.environ.get(config.keys_env, "")
        if not value:
            raise ConfigError(
                f"names {config.keys_env}, which is unset or empty", key="daemon.keys_env"
            )
        keys += [k.strip() for k in value.split(",") if k.strip()]
    if config.key_file is not None:
        path = Path(config.key_file).expanduser()
        try:
            keys += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.strerror}", key="daemon.key_file"
            ) from None
    return keys


def _error(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
    body = {"error": {"message": message, "type": "clusterctl", "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


class FrontDoor:
    def __init__(self, ctx: DaemonContext, supervisor: Supervisor, keys: list[str]) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.keys = [k.encode() for k in keys]
        self.waiting = 0
        self.in_flight = 0

    def authorized(self, request: Request) -> bool:
        if not self.keys:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        # Every key is compared, in constant time, whether an earlier one matched or not.
        matched = [hmac.compare_digest(given, key) for key in self.keys]
        return any(matched)

    async def _serving(self) -> str | None:
        """Wait until the daemon serves; the upstream base URL, or None past the bounds."""
        if self.supervisor.state is ServingState.SERVING and self.supervisor.client:
            return self.supervisor.client.base_url
        if self.waiting >= self.ctx.config.queue_size:
            return None
        self.waiting += 1
        self.ctx.metrics.front_waiting.set(self.waiting)
        try:
            await asyncio.wait_for(self.supervisor.serving_now.wait(), self.ctx.config.queue_wait_s)
        except TimeoutError:
            return None
        finally:
            self.waiting -= 1
            self.ctx.metrics.front_waiting.set(self.waiting)
        client = self.supervisor.client
        return client.base_url if client is not None else None

    def _upstream_headers(self, request: Request) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("authorization", None)
        profile_name = self.ctx.record.desired().profile
        if profile_name is not None:
            key = self.ctx.profile(profile_name).api_key(self.ctx.environ)
            if key is not None:
                headers["authorization"] = f"Bearer {key.get_secret_value()}"
        return headers

    async def forward(self, request: Request, path: str) -> Response:
        route = f"/v1/{path}"
        if not self.authorized(request):
            return _error(401, "a valid front-door key is required (Authorization: Bearer KEY)")
        arrived = time.monotonic()
        body = await request.body()
        stream = _wants_stream(body)
        failure = ""
        for _ in range(RESENDS + 1):
            base = await self._serving()
            if base is None:
                why = self.supervisor.reason or self.supervisor.state.value
                self._record(route, 503, stream, arrived, error=f"not serving: {why}")
                return _error(503, f"the cluster is not serving ({why}); try again", 10)
            upstream = httpx.AsyncClient(base_url=base, timeout=self.ctx.config.request_timeout_s)
            outgoing = upstream.build_request(
                request.method,
                route,
                content=body,
                headers=self._upstream_headers(request),
                params=request.query_params,
            )
            self.in_flight += 1
            try:
                response = await upstream.send(outgoing, stream=True)
            except httpx.HTTPError as exc:
                # No answer at all: llama-server is gone (the daemon has not seen it yet).
                # Nothing was generated, so the request waits for the group to serve again
                # and is sent once more, instead of failing.
                self.in_flight -= 1
                await upstream.aclose()
                failure = f"{type(exc).__name__}: {exc}"
                await self._until_noticed()
                continue
            queued = time.monotonic() - arrived
            headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            return StreamingResponse(
                self._relay(response, upstream, route, stream, arrived, queued),
                status_code=response.status_code,
                headers=headers,
            )
        self._record(route, 502, stream, arrived, error=failure)
        return _error(502, f"llama-server did not answer: {failure}")

    async def _until_noticed(self) -> None:
        """Wake the supervisor and wait (briefly) until it sees the group is not serving."""
        self.supervisor.wake()
        patience = 3 * self.ctx.config.probe_interval_s + 5
        for _ in range(int(patience / 0.1)):
            if self.supervisor.state is not ServingState.SERVING:
                return
            await asyncio.sleep(0.1)

    async def _relay(
        self,
        response: httpx.Response,
        upstream: httpx.AsyncClient,
        route: str,
        stream: bool,
        arrived: float,
        queued: float,
    ) -> AsyncIterator[bytes]:
        """Chunks as they come; the usage from the last event (or the whole body)."""
        first: float | None = None
        tail = b""
        whole = bytearray()
        error = None
        try:
            async for chunk in response.aiter_raw():
                if first is None:
                    first = time.monotonic()
                tail = (tail + chunk)[-8192:]
                if not stream and len(whole) < 1 << 20:
                    whole += chunk
                yield chunk
        except httpx.HTTPError as exc:
            error = f"llama-server went away mid-request: {type(exc).__name__}"
            log.warning("front door", route=route, error=error)
            if stream:
                message = json.dumps({"error": {"message": error, "type": "clusterctl"}})
                yield f"data: {message}\n\n".encode()
        finally:
            self.in_flight -= 1
            await response.aclose()
            await upstream.aclose()
            found = _usage(bytes(whole) if not stream else tail, stream)
            ttft = (first - arrived) if (stream and first is not None) else None
            self._record(route, response.status_code, stream, arrived, queued, ttft, error, **found)

    def _record(
        self,
        route: str,
        status: int,
        stream: bool,
        arrived: float,
        queued: float = 0.0,
        ttft: float | None = None,
        error: str | None = None,
        **found: Any,
    ) -> None:
        record = RequestRecord(
            at=time.time(),
            route=route,
            status=status,
            stream=stream,
            ttft_s=ttft,
            duration_s=time.monotonic() - arrived,
            queued_s=queued,
            error=error,
            **found,
        )
        self.ctx.usage.add(record)
        metrics = self.ctx.metrics
        metrics.front_requests.labels(str(status)).inc()
        if record.ttft_s is not None:
            metrics.front_ttft.observe(record.ttft_s)
        if record.tg_tps is not None:
            metrics.front_tg_tps.set(record.tg_tps)
        self.ctx.events.publish("request", **record.model_dump(mode="json"))


def _wants_stream(body: bytes) -> bool:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data.get("stream"))


def _usage(raw: bytes, stream: bool) -> dict[str, Any]:
    """Figures from the whole JSON body, or from the last data event of a stream that has
    ``usage`` or ``timings`` (llama-server puts them in its final chunk)."""
    text = raw.decode("utf-8", "replace")
    if not stream:
        try:
            body = json.loads(text)
        except ValueError:
            return {}
        return figures(body) if isinstance(body, dict) else {}
    for line in reversed(text.splitlines()):
        if not line.startswith("data:") or "[DONE]" in line:
            continue
        try:
            event = json.loads(line.removeprefix("data:").strip())
        except ValueError:
            continue
        if isinstance(event, dict) and ("timings" in event or "usage" in event):
            return figures(event)
    return {}


def mount(app: FastAPI, ctx: DaemonContext, supervisor: Supervisor) -> FrontDoor:
    door = FrontDoor(ctx, supervisor, load_keys(ctx))

    @app.api_route("/v1/{path:path}", methods=["GET", "POST"], include_in_schema=False)
    async def v1(request: Request, path: str) -> Response:
        return await door.forward(request, path)

    return door
