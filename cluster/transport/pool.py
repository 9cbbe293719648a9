"""One reused connection per host, and running an operation on many hosts at once.

``each`` returns a result per host: partial failure is data (a ``ClusterError`` in place of
the result), never an exception that loses the other hosts' answers halfway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TypeVar

from cluster.concurrency import together
from cluster.config.models import HostConfig
from cluster.errors import ClusterError
from cluster.transport.base import Transport
from cluster.transport.local import LocalTransport
from cluster.transport.ssh import SSHTransport

T = TypeVar("T")


def transport_for(host: HostConfig) -> Transport:
    return LocalTransport(host) if host.transport == "local" else SSHTransport(host)


class HostPool:
    """Connections to a set of hosts, opened on first use and closed together."""

    def __init__(self, hosts: Iterable[HostConfig]) -> None:
        self._transports = {host.name: transport_for(host) for host in hosts}

    def __getitem__(self, name: str) -> Transport:
        return self._transports[name]

    @property
    def names(self) -> list[str]:
        return list(self._transports)

    async def each(
        self,
        operation: Callable[[Transport], Awaitable[T]],
        names: Iterable[str] | None = None,
    ) -> dict[str, T | ClusterError]:
        """Run operation on every named host concurrently; a host's error is its result."""
        chosen = list(self._transports) if names is None else list(names)

        async def one(name: str) -> T | ClusterError:
            try:
                return await operation(self._transports[name])
            except ClusterError as exc:
                return exc

        results = await together(*(one(name) for name in chosen))
        return dict(zip(chosen, results, strict=True))

    async def close(self) -> None:
        await together(*(t.close() for t in self._transports.values()))

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
