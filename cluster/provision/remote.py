"""Reaching a host for provisioning: Fabric over ssh, or this machine for local hosts.

Provisioning copies files, which the controller's asyncssh transport does not do; Fabric
(over Paramiko) does, and it is the project's chosen tool for it. Its defaults are made
safe here: host keys are checked against the host's ``known_hosts`` (or
``~/.ssh/known_hosts``) and an unknown key is refused unless the host opts out with
``insecure_skip_host_key_check``; the agent is never forwarded; ``~/.ssh/config`` is not
read, so nothing there turns either back on. Commands are argv lists joined with
``shlex.join``: every argument quoted, nothing spliced into a shell string.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from cluster.config.models import HostConfig
from cluster.errors import HostKeyError, TransportError
from cluster.transport.base import CommandResult


class Remote(Protocol):
    """What provisioning needs of a host: run a command, send and fetch a file."""

    name: str

    def run(self, argv: Sequence[str], *, timeout: float | None = 600) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def close(self) -> None: ...


class LocalRemote:
    """A ``transport = "local"`` host: commands and paths relative to the home directory."""

    def __init__(self, host: HostConfig) -> None:
        self.name = host.name

    def _path(self, remote: str) -> Path:
        path = Path(remote).expanduser()
        return path if path.is_absolute() else Path.home() / path

    def run(self, argv: Sequence[str], *, timeout: float | None = 600) -> CommandResult:
        start = time.monotonic()
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                cwd=Path.home(),
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TransportError(self.name, f"{argv[0]}: {exc}") from exc
        return CommandResult(
            self.name,
            list(argv),
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
            time.monotonic() - start,
        )

    def put(self, local: Path, remote: str) -> None:
        try:
            shutil.copyfile(local, self._path(remote))
        except OSError as exc:
            raise TransportError(self.name, f"copy to {remote}: {exc.strerror}") from exc

    def get(self, remote: str, local: Path) -> None:
        try:
            shutil.copyfile(self._path(remote), local)
        except OSError as exc:
            raise TransportError(self.name, f"copy of {remote}: {exc.strerror}") from exc

    def close(self) -> None:
        return None


class FabricRemote:
    """An ssh host through a Fabric ``Connection`` with verified host keys."""

    def __init__(self, host: HostConfig) -> None:
        import paramiko
        from fabric import Config, Connection

        self.name = host.name
        self.target = host.ssh_target or host.name
        connect_kwargs: dict[str, Any] = {"allow_agent": host.ssh_key is None}
        if host.ssh_key is not None:
            connect_kwargs["key_filename"] = [str(host.ssh_key.expanduser())]
            connect_kwargs["look_for_keys"] = False
        self.connection = Connection(
            self.target,
            user=host.user,
            port=host.ssh_port,
            connect_timeout=int(max(1, host.connect_timeout_s)),
            connect_kwargs=connect_kwargs,
            forward_agent=False,
            config=Config(overrides={"load_ssh_configs": False}),
        )
        client = self.connection.client
        if host.insecure_skip_host_key_check:
            client.set_missing_host_key_policy(paramiko.WarningPolicy())
        else:
            known = (host.known_hosts or Path("~/.ssh/known_hosts")).expanduser()
            if known.is_file():
                client.load_host_keys(str(known))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def _open(self) -> None:
        import paramiko

        if self.connection.is_connected:
            return
        try:
            self.connection.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(self.name, f"host key of {self.target} changed") from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    self.name,
                    f"host key of {self.target} not in known_hosts; add it or set "
                    "insecure_skip_host_key_check = true for this host",
                ) from exc
            raise TransportError(self.name, f"ssh to {self.target}: {exc}") from exc
        except OSError as exc:
            raise TransportError(self.name, f"ssh to {self.target}: {exc}") from exc

    def run(self, argv: Sequence[str], *, timeout: float | None = 600) -> CommandResult:
        import invoke

        self._open()
        start = time.monotonic()
        try:
            result = self.connection.run(
                shlex.join(argv), hide=True, warn=True, in_stream=False, timeout=timeout
            )
        except invoke.exceptions.CommandTimedOut as exc:
            raise TransportError(self.name, f"{argv[0]} did not finish in {timeout}s") from exc
        except OSError as exc:
            raise TransportError(self.name, f"{argv[0]}: {exc}") from exc
        return CommandResult(
            self.name,
            list(argv),
            int(result.exited),
            str(result.stdout),
            str(result.stderr),
            time.monotonic() - start,
        )

    def put(self, local: Path, remote: str) -> None:
        self._open()
        try:
            self.connection.put(str(local), remote=remote)
        except OSError as exc:
            raise TransportError(self.name, f"copy to {remote}: {exc}") from exc

    def get(self, remote: str, local: Path) -> None:
        self._open()
        try:
            self.connection.get(remote, local=str(local))
        except OSError as exc:
            raise TransportError(self.name, f"copy of {remote}: {exc}") from exc

    def close(self) -> None:
        self.connection.close()


class Remotes:
    """One ``Remote`` per host, opened lazily, closed together (a context manager)."""

    def __init__(self, hosts: Sequence[HostConfig]) -> None:
        self._hosts = {host.name: host for host in hosts}
        self._open: dict[str, Remote] = {}

    def __getitem__(self, name: str) -> Remote:
        if name not in self._open:
            host = self._hosts[name]
            self._open[name] = (
                LocalRemote(host) if host.transport == "local" else FabricRemote(host)
            )
        return self._open[name]

    def __enter__(self) -> Remotes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for remote in self._open.values():
            remote.close()
