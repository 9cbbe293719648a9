"""LlamaClient: one retry on a connection the server had already closed, and no more."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from cluster.errors import HTTPError
from cluster.llamacpp.client import LlamaClient


def client_failing(times: int) -> tuple[LlamaClient, list[str]]:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) <= times:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"tokens": [1, 626, 628]})

    client = LlamaClient("http://llama")
    client._http = httpx.AsyncClient(base_url="http://llama", transport=httpx.MockTransport(handler))
    return client, calls


def test_a_stale_pooled_connection_is_retried_once() -> None:
    client, calls = client_failing(1)

    async def main() -> list[int]:
        async with client:
            return await client.tokenize("hello world")

    assert asyncio.run(main()) == [1, 626, 628]
    assert calls == ["/tokenize", "/tokenize"]


def test_a_server_that_keeps_dropping_is_an_error() -> None:
    client, calls = client_failing(2)

    async def main() -> list[int]:
        async with client:
            return await client.tokenize("hello world")

    with pytest.raises(HTTPError, match="RemoteProtocolError"):
        asyncio.run(main())
    assert len(calls) == 2
