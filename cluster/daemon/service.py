"""``clusterctl daemon``: startup, the main loop, shutdown (the uvicorn lifecycle).

Startup: take the cluster's lease ("clusterctl daemon", held for the daemon's life: every
one-shot mutating command refuses naming it), open the API (Unix socket, owner only; TCP
with a token when configured), then run the supervisor and the job runner. A daemon that
starts after its own crash or an upgrade adopts the components that serve the desired
profile, split and build (the supervisor's first tick), and resumes a job left running.

Shutdown, on SIGTERM or SIGINT (handlers installed for the daemon's life and restored
after): stop taking work, pause the running job (its run is resumed by the next daemon),
stop the API, and leave the serving components running for the next daemon to adopt. A
second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from cluster.daemon.api import build_app
from cluster.daemon.auth import TokenGuard
from cluster.daemon.context import DaemonContext, log
from cluster.daemon.dashboard import routes as dashboard
from cluster.daemon.jobs import JobRunner
from cluster.daemon.supervisor import Supervisor
from cluster.errors import ConfigError
from cluster.orchestration import lease

DAEMON_COMMAND = "clusterctl daemon"
STOP_GRACE_S = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def socket_path(ctx: DaemonContext) -> Path:
    configured = ctx.config.socket
    return Path(configured).expanduser() if configured else ctx.state_dir / "daemon.sock"


def _clear_stale_socket(path: Path) -> None:
    """A socket file no daemon answers on (a killed daemon's) is removed; a live one is an
    error (the lease normally refuses first)."""
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ConfigError(f"a daemon already answers on {path}", key="daemon.socket")


class Daemon:
    def __init__(self, ctx: DaemonContext, token: str | None = None) -> None:
        self.ctx = ctx
        self.token = token
        self.supervisor = Supervisor(ctx)
        self.jobs = JobRunner(ctx, self.supervisor)
        self.app = build_app(ctx, self.supervisor, self.jobs)
        self._stop = asyncio.Event()
        self._signals = 0

    def _servers(self, path: Path) -> list[_Server]:
        quiet: dict[str, Any] = {"log_level": "warning", "lifespan": "off", "access_log": False}
        servers = [_Server(uvicorn.Config(self.app, uds=str(path), **quiet))]
        address = self.ctx.config.address()
        if address is not None:
            guarded = TokenGuard(self.app, self.token)
            servers.append(
                _Server(uvicorn.Config(guarded, host=address[0], port=address[1], **quiet))
            )
        return servers

    @contextlib.contextmanager
    def _handle_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        log.info("signal", signal=signal.Signals(sig).name, count=self._signals)
        self._stop.set()

    def _lease_lost(self, why: str) -> None:
        log.warning("stopping", reason=why)
        self._stop.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        ctx = self.ctx
        path = socket_path(ctx)
        async with lease.hold(
            ctx.pool, ctx.inventory, DAEMON_COMMAND, say=ctx.say, on_stop=self._lease_lost
        ):
            _clear_stale_socket(path)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            servers = self._servers(path)
            serving = [asyncio.ensure_future(server.serve()) for server in servers]
            while not all(server.started for server in servers):
                if any(task.done() for task in serving):
                    for task in serving:
                        task.result()
                await asyncio.sleep(0.02)
            path.chmod(0o600)
            work = [
                asyncio.ensure_future(self.supervisor.run()),
                asyncio.ensure_future(self.jobs.run()),
                asyncio.ensure_future(dashboard.watch_of(self.app).run()),
            ]
            log.info("daemon ready", socket=str(path), tcp=ctx.config.listen)
            if ready is not None:
                ready.set()
            try:
                with self._handle_signals():
                    await self._stop.wait()
                    await self._shutdown(servers, serving, work)
            finally:
                path.unlink(missing_ok=True)

    async def _shutdown(
        self, servers: list[_Server], serving: Sequence[asyncio.Future[None]], work: list[Any]
    ) -> None:
        """Pause the job, stop supervising, close the API; the components keep serving."""
        self._stop.clear()
        graceful = asyncio.ensure_future(self.jobs.pause())
        forced = asyncio.ensure_future(self._stop.wait())  # a second signal
        await asyncio.wait([graceful, forced], timeout=STOP_GRACE_S, return_when="FIRST_COMPLETED")
        forced.cancel()
        for task in work:
            task.cancel()
        await asyncio.gather(*work, graceful, return_exceptions=True)
        for server in servers:
            server.should_exit = True
            server.force_exit = self._signals > 1
        await asyncio.gather(*serving, return_exceptions=True)
        log.info("daemon stopped; what serves keeps serving")
