"""What every way of reaching a host provides, and the result records it returns.

A transport supplies two primitives, ``run`` (one command, collected) and ``stream``
(one command, lines as they come); everything else the controller does on a host is
built from those with fixed scripts and argv lists (``cluster.transport.remote``).
Commands are always argv lists: a transport quotes them itself, and nothing upstream
ever builds a shell string out of input.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from cluster.config.models import HostConfig
from cluster.errors import RemoteCommandError


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one host."""

    host: str
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Return self, or raise RemoteCommandError carrying these fields."""
        if not self.ok:
            raise RemoteCommandError(self.host, self.argv, self.exit_status, self.stderr)
        return self


class Transport(abc.ABC):
    """One reused connection to one host."""

    def __init__(self, host: HostConfig) -> None:
        self.host = host

    @property
    def name(self) -> str:
        return self.host.name

    @abc.abstractmethod
    async def connect(self) -> float:
        """Open the connection (idempotent); return how long it took in seconds."""

    @abc.abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        stdin: str | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run argv to completion and collect its output."""

    @abc.abstractmethod
    def stream(self, argv: Sequence[str]) -> AsyncGenerator[str, None]:
        """Run argv and yield its stdout lines until it exits or the caller stops."""

    @abc.abstractmethod
    async def open_tunnel(self, remote_host: str, remote_port: int) -> tuple[str, int]:
        """A local address that reaches remote_host:remote_port as seen from the host."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; a later call reconnects."""
