"""The dashboard's browser tests' parts: a local two-host cluster on this machine (no
root: both hosts use the local transport, their "link" is loopback with 127.0.0.2 and
127.0.0.3) and its ``clusterctl daemon`` on loopback TCP with a token; a page of Chromium
with what went wrong in it. The fixtures are in tests/browser/conftest.py."""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from support import DaemonWaits, user_env

from cluster.daemon.client import DaemonClient
from cluster.daemon.models import DaemonStatus

if TYPE_CHECKING:  # playwright is imported only where the tests run (it may be missing)
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN_ENV = "CLUSTERCTL_TEST_DAEMON_TOKEN"
REPO = Path(__file__).resolve().parents[2]
# Where the tests also write the screenshots docs/ keeps (unset: only the test's tmp dir).
SHOTS_ENV = "CLUSTERCTL_DASHBOARD_SHOTS"


def free_port(address: str) -> int:
    """A port nothing listens on at ``address``, below the kernel's ephemeral range (one
    from that range may meanwhile become some connection's local port)."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port on {address}")


def hosts_toml(root: Path, bin_dir: Path, listen: str) -> str:
    hosts = []
    for name, address in (("evo", "127.0.0.2"), ("bee", "127.0.0.3")):
        hosts.append(
            f'[hosts.{name}]\ntransport = "local"\nlink_address = "{address}"\n'
            f'link_interface = "lo"\nrpc_port = {free_port(address)}\n'
            f'llama_bin_dir = "{bin_dir}"\nrun_dir = "{root / "run" / name}"\n'
            f'rpc_cache_dir = "{root / "rpc-cache" / name}"\n'
        )
    return (
        '[cluster]\nname = "desk"\nhead = "evo"\n\n'
        + "\n".join(hosts)
        + f'\n[daemon]\nlisten = "{listen}"\ntoken_env = "{TOKEN_ENV}"\n'
        "probe_interval_s = 1\nidle_probe_s = 5\nbackoff_base_s = 1\n"
    )


def profile_toml(model: Path, port: int) -> str:
    return (
        f'model = "{model}"\nrpc_hosts = ["evo", "bee"]\ntensor_split = "1/1"\n'
        "n_gpu_layers = 99\nctx_size = 2048\nparallel = 1\nno_warmup = true\nrpc_cache = true\n"
        f'bind_host = "127.0.0.1"\nport = {port}\nload_timeout_s = 120\nstall_timeout_s = 20\n'
        "ready_timeout_s = 60\nretries = 1\nretry_backoff_s = 1\n"
    )


SWEEP = (
    'profile = "tiny"\nrange = { start = "0.8/1.2", stop = "1.2/0.8", step = 0.2 }\n'
    '[measure]\nshape = "random"\ntokens = 64\ngen = 8\nrepeat = 1\nwarmup = 0\n'
)


@dataclass
class LocalDaemon(DaemonWaits):
    """``clusterctl daemon`` of a local cluster in ``root``, and a client of its socket."""

    root: Path
    port: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def client(self) -> DaemonClient:
        return DaemonClient(self.state_dir / "daemon.sock")

    def env(self) -> dict[str, str]:
        clean = user_env()
        return {
            **clean,
            "CLUSTERCTL_CONFIG": str(self.root / "hosts.toml"),
            "CLUSTERCTL_PLAYBOOKS": str(self.root / "playbooks"),
            "CLUSTERCTL_STATE_DIR": str(self.state_dir),
            TOKEN_ENV: self.token,
        }

    def clusterctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cluster", *args],
            capture_output=True, text=True, env=self.env(), cwd=REPO, timeout=300, check=False,
        )  # fmt: skip

    def start(self) -> None:
        with (self.root / "daemon.log").open("a") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cluster", "-v", "daemon"],
                stdout=subprocess.DEVNULL, stderr=log, env=self.env(), cwd=REPO, text=True,
            )  # fmt: skip
        self.until(lambda s: True, "the API answers", timeout=60)

    def status(self) -> DaemonStatus | None:
        client = self.client
        try:
            return client.status()
        except Exception:
            return None
        finally:
            client.close()

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def component_pid(self, host: str, component: str) -> int:
        """The component process itself (the child of its wrapper shell)."""
        pid_file = self.root / "run" / host / f"{component}.pid"
        leader = int(pid_file.read_text().split()[0])
        children = Path(f"/proc/{leader}/task/{leader}/children").read_text().split()
        assert children, f"{component} on {host} has no process under its wrapper {leader}"
        return int(children[0])

    def stop(self) -> None:
        """SIGTERM (the components keep serving), then ``down`` stops them."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.clusterctl("down")


@dataclass
class Browser:
    """One page of a fresh Chromium profile, with what went wrong in it."""

    page: Page
    errors: list[str]
    urls: list[str]
    shots: Path

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        """A PNG in the test's directory, and in $CLUSTERCTL_DASHBOARD_SHOTS when set."""
        path = self.shots / name
        target = self.page.locator(selector) if selector else self.page
        target.screenshot(path=str(path))
        if keep := os.environ.get(SHOTS_ENV):
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / name).write_bytes(path.read_bytes())
        return path
