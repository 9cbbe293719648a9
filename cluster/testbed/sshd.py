"""A real OpenSSH sshd in each testbed namespace, with keys made for the testbed.

The controller must meet the testbed exactly as it meets real hosts: key authentication,
host key verification on, root login. So each host gets a generated ed25519 host key and
its own sshd_config, and the controller gets one client key and a known_hosts file that
lists every host's management address with its host key.

sshd runs in its ordinary daemon mode (no ``-D``): it forks, detaches and writes its
PidFile, so it is nobody's child and outlives the process that created the testbed, which
is what lets ``clusterctl testbed down`` in another process tear it down by recorded pid.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from cluster.testbed.network import TestbedError, run_checked

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
SSH_PORT = 22
READY_TIMEOUT_S = 15.0


class SshdInstance(BaseModel):
    """One host's sshd: where its files are, where it listens and, once started, its pid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    namespace: str
    address: ipaddress.IPv4Address
    port: int = SSH_PORT
    config: Path
    host_key: Path
    pid_file: Path
    log_file: Path
    pid: int | None = None


def generate_key(path: Path, comment: str) -> str:
    """Write an ed25519 key pair at ``path`` (no passphrase); returns the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def sshd_config_text(
    *,
    address: ipaddress.IPv4Address,
    port: int,
    host_key: Path,
    pid_file: Path,
    authorized_keys: Path,
    clean_shell: bool = False,
) -> str:
    """The sshd_config of one testbed host; every path absolute, nothing from /etc/ssh.

    With ``clean_shell``, commands run without the login user's ``~/.bashrc``: bash sources
    it for a command over ssh only at shell level 0, and the session starts at level 1."""
    for path in (host_key, pid_file, authorized_keys):
        # sshd splits its arguments on whitespace and expands %-tokens in some of them.
        if not path.is_absolute() or any(ch in str(path) for ch in ' \t\n"%'):
            raise TestbedError(f"{path}: sshd needs an absolute path without spaces, quotes, %")
    lines = [
        f"ListenAddress {address}:{port}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The keys live under a test's temporary directory, not a home with sshd's modes.
        "StrictModes no",
        "PrintMotd no",
        "X11Forwarding no",
        "Subsystem sftp internal-sftp",
        # Tests open many sessions at once; sshd's defaults (10:30:100, 10) drop some.
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        # Sessions of a controller that vanished die instead of lingering in the namespace.
        "ClientAliveInterval 15",
        "ClientAliveCountMax 4",
        "LogLevel VERBOSE",
    ]
    if clean_shell:
        lines.append("SetEnv SHLVL=1")
    return "\n".join(lines) + "\n"


def known_hosts_text(entries: Iterable[tuple[ipaddress.IPv4Address, str]]) -> str:
    """known_hosts lines ``ADDRESS TYPE KEY`` from (address, public key line) pairs."""
    lines = []
    for address, public_key in entries:
        key_type, key = public_key.split()[:2]
        lines.append(f"{address} {key_type} {key}")
    return "\n".join(lines) + "\n"


def plan_sshd(
    directory: Path, *, name: str, namespace: str, address: ipaddress.IPv4Address
) -> SshdInstance:
    """Where one host's sshd files go (all under ``directory``); pure."""
    return SshdInstance(
        name=name,
        namespace=namespace,
        address=address,
        config=directory / "sshd_config",
        host_key=directory / "ssh_host_ed25519_key",
        pid_file=directory / "sshd.pid",
        log_file=directory / "sshd.log",
    )


def prepare_sshd(
    instance: SshdInstance, authorized_keys: Path, *, clean_shell: bool = False
) -> str:
    """Write the host key and sshd_config of ``instance``; returns the public host key."""
    instance.config.parent.mkdir(parents=True, exist_ok=True)
    public_key = generate_key(instance.host_key, f"testbed-host-{instance.name}")
    instance.config.write_text(
        sshd_config_text(
            address=instance.address,
            port=instance.port,
            host_key=instance.host_key,
            pid_file=instance.pid_file,
            authorized_keys=authorized_keys,
            clean_shell=clean_shell,
        )
    )
    return public_key


def start_sshd(instance: SshdInstance) -> SshdInstance:
    """Start sshd inside its namespace and wait until it answers; returns it with its pid."""
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    instance.pid_file.unlink(missing_ok=True)
    # -t first: a config or key problem then reads as one line, not as a silent timeout.
    run_checked([str(SSHD), "-t", "-f", str(instance.config)])
    sshd = [str(SSHD), "-f", str(instance.config), "-E", str(instance.log_file)]
    run_checked(["ip", "netns", "exec", instance.namespace, *sshd])
    started = instance.model_copy(update={"pid": _wait_for_pid_file(instance)})
    wait_for_banner(started)
    return started


def _wait_for_pid_file(instance: SshdInstance) -> int:
    # The daemon writes its PidFile after it has bound its listening socket.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            text = instance.pid_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    raise TestbedError(
        f"sshd of {instance.name} wrote no pid file within {READY_TIMEOUT_S:g}s"
        f"{_log_tail(instance)}"
    )


def wait_for_banner(instance: SshdInstance, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until the host's sshd accepts TCP from the root namespace and says SSH-2.0.

    Each probe shows in the sshd log as "kex_exchange_identification: Connection closed
    by remote host"; that line is this wait, not a client failing.
    """
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((str(instance.address), instance.port), timeout=2) as s:
                s.settimeout(2)
                banner = s.recv(64)
            if banner.startswith(b"SSH-2.0-"):
                return
            last = f"unexpected banner {banner[:20]!r}"
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
        time.sleep(0.05)
    raise TestbedError(
        f"sshd of {instance.name} at {instance.address}:{instance.port} not ready within "
        f"{timeout_s:g}s ({last}){_log_tail(instance)}"
    )


def _log_tail(instance: SshdInstance) -> str:
    try:
        lines = instance.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f"; sshd log: {lines[-1]}" if lines else ""
