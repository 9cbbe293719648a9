"""The asyncssh transport: one reused, verified connection per host.

Host keys are checked against known_hosts by default (the host's ``known_hosts`` file, or
the user's ``~/.ssh/known_hosts``). ``insecure_skip_host_key_check = true`` on a host turns
that off for that host only, and every connection made that way logs a warning.
Connection attempts are retried with tenacity; a host key problem is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import time
from collections.abc import AsyncGenerator, Sequence

import asyncssh
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from cluster.config.models import HostConfig
from cluster.errors import HostKeyError, TransportError
from cluster.transport.base import CommandResult, Transport

log = structlog.get_logger(__name__)

CONNECT_ATTEMPTS = 3


class _RetryableConnectError(TransportError):
    """A connection failure worth another attempt (refused, timed out, reset)."""


class SSHTransport(Transport):
    def __init__(self, host: HostConfig) -> None:
        super().__init__(host)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._tunnels: dict[tuple[str, int], tuple[str, int]] = {}

    def _options(self) -> dict[str, object]:
        host = self.host
        # Never forward the agent, whatever ~/.ssh/config says: a host that can use our
        # agent can log in wherever we can.
        options: dict[str, object] = {
            "connect_timeout": host.connect_timeout_s,
            "agent_forwarding": False,
        }
        if host.user is not None:
            options["username"] = host.user
        if host.ssh_port is not None:
            options["port"] = host.ssh_port
        if host.ssh_key is not None:
            options["client_keys"] = [str(host.ssh_key.expanduser())]
        if host.insecure_skip_host_key_check:
            options["known_hosts"] = None
        elif host.known_hosts is not None:
            options["known_hosts"] = str(host.known_hosts.expanduser())
        return options

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        target = self.host.ssh_target or self.host.name
        try:
            return await asyncssh.connect(target, **self._options())
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(
                self.name,
                f"host key of {target} not verified ({exc.reason}); add it to known_hosts "
                "or set insecure_skip_host_key_check = true for this host",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise TransportError(self.name, f"ssh to {target}: permission denied") from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise _RetryableConnectError(self.name, f"ssh to {target}: {reason}") from exc

    async def connect(self) -> float:
        start = time.monotonic()
        async with self._lock:
            if self._conn is not None:
                return 0.0
            if self.host.insecure_skip_host_key_check:
                log.warning("host key check disabled by configuration", host=self.name)
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(CONNECT_ATTEMPTS),
                    wait=wait_exponential(multiplier=0.5, max=4),
                    retry=retry_if_exception_type(_RetryableConnectError),
                    reraise=True,
                ):
                    with attempt:
                        self._conn = await self._connect_once()
            except _RetryableConnectError as exc:
                raise TransportError(self.name, str(exc).split(": ", 1)[1]) from exc
        return time.monotonic() - start

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            await self.connect()
        assert self._conn is not None
        return self._conn

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        stdin: str | None = None,
        check: bool = False,
    ) -> CommandResult:
        conn = await self._connection()
        command = shlex.join(argv)
        start = time.monotonic()
        try:
            completed = await conn.run(command, input=stdin, timeout=timeout, check=False)
        except asyncssh.TimeoutError as exc:
            raise TransportError(self.name, f"{argv[0]} did not finish within {timeout}s") from exc
        except (OSError, asyncssh.Error) as exc:
            await self._drop()
            raise TransportError(self.name, f"connection lost running {argv[0]}: {exc}") from exc
        status = completed.exit_status
        if status is None or status < 0:  # killed by a signal on the far side
            status = _signal_status(completed.exit_signal)
        result = CommandResult(
            host=self.name,
            argv=list(argv),
            exit_status=status,
            stdout=_text(completed.stdout),
            stderr=_text(completed.stderr),
            elapsed_s=time.monotonic() - start,
        )
        return result.check() if check else result

    async def stream(self, argv: Sequence[str]) -> AsyncGenerator[str, None]:
        conn = await self._connection()
        try:
            async with conn.create_process(shlex.join(argv)) as process:
                async for line in process.stdout:
                    yield _text(line).rstrip("\n")
        except (OSError, asyncssh.Error) as exc:
            raise TransportError(self.name, f"stream of {argv[0]} broke: {exc}") from exc

    async def open_tunnel(self, remote_host: str, remote_port: int) -> tuple[str, int]:
        """Forward a local port over this connection (llama-server often binds loopback)."""
        key = (remote_host, remote_port)
        if key not in self._tunnels:
            conn = await self._connection()
            target = "127.0.0.1" if remote_host in ("0.0.0.0", "") else remote_host
            try:
                listener = await conn.forward_local_port("127.0.0.1", 0, target, remote_port)
            except (OSError, asyncssh.Error) as exc:
                raise TransportError(
                    self.name, f"cannot forward to {target}:{remote_port}: {exc}"
                ) from exc
            self._tunnels[key] = ("127.0.0.1", listener.get_port())
        return self._tunnels[key]

    async def _drop(self) -> None:
        """Close a broken connection before the next command opens a new one, so its
        channels and forwarded ports do not linger beside the new connection's."""
        conn, self._conn = self._conn, None
        self._tunnels.clear()
        if conn is not None:
            conn.abort()
            with contextlib.suppress(OSError, asyncssh.Error):
                await conn.wait_closed()

    async def close(self) -> None:
        self._tunnels.clear()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None


def _signal_status(exit_signal: tuple[str, bool, str, str] | None) -> int:
    """Shell convention for a command killed by a signal: 128 + its number."""
    if not exit_signal:
        return 255
    try:
        return 128 + int(signal.Signals[f"SIG{exit_signal[0]}"])
    except KeyError:
        return 255


def _text(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
