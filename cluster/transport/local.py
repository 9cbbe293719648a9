"""The local transport: the same operations, run on this machine as subprocesses.

Commands run from the user's home directory, with the environment of a login (``HOME``,
``USER``, ``PATH``, the locale), as they would after an ssh login: a relative ``run_dir``
means the same thing for both transports, and a component never inherits the controller's
own environment (API keys, tokens). What a component needs comes from the host's ``env``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from cluster.errors import TransportError
from cluster.transport.base import CommandResult, Transport

# What a login shell would give a command; nothing else of the controller's environment.
_LOGIN_VARIABLES = ("HOME", "USER", "LOGNAME", "PATH", "SHELL", "LANG", "LC_ALL", "TZ", "TMPDIR")


def login_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in _LOGIN_VARIABLES if name in os.environ}
    env.setdefault("HOME", str(Path.home()))
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return env


class LocalTransport(Transport):
    async def connect(self) -> float:
        return 0.0

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = 60.0,
        stdin: str | None = None,
        check: bool = False,
    ) -> CommandResult:
        start = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=Path.home(),
                env=login_environment(),
            )
        except OSError as exc:
            raise TransportError(self.name, f"cannot run {argv[0]}: {exc.strerror}") from exc
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise TransportError(self.name, f"{argv[0]} did not finish within {timeout}s") from exc
        except asyncio.CancelledError:
            # The caller gave up: the command must not outlive it.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
            raise
        status = process.returncode if process.returncode is not None else 255
        result = CommandResult(
            host=self.name,
            argv=list(argv),
            exit_status=128 - status if status < 0 else status,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            elapsed_s=time.monotonic() - start,
        )
        return result.check() if check else result

    async def stream(self, argv: Sequence[str]) -> AsyncGenerator[str, None]:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path.home(),
            env=login_environment(),
        )
        assert process.stdout is not None
        try:
            async for line in process.stdout:
                yield line.decode("utf-8", "replace").rstrip("\n")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    async def open_tunnel(self, remote_host: str, remote_port: int) -> tuple[str, int]:
        return ("127.0.0.1" if remote_host in ("0.0.0.0", "") else remote_host), remote_port

    async def close(self) -> None:
        return None
