"""Test helpers: the real command line in a subprocess, one test's view of the testbed
(inventory, profiles, state) and what is left running in its namespaces."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.daemon.client import DaemonClient
from cluster.daemon.models import DaemonStatus
from cluster.store import Store
from cluster.testbed.bed import Testbed

REPO = Path(__file__).resolve().parent.parent


def user_env() -> dict[str, str]:
    """This environment without the CLUSTERCTL_ variables a user would not have set, but
    with the cache's: the builds and models are this run's, never a warmer ``~/.cache``."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLUSTERCTL_") or k == "CLUSTERCTL_CACHE"
    }


def clusterctl(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cluster`` as a user would (``user_env``)."""
    clean = user_env()
    return subprocess.run(
        [sys.executable, "-m", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **(env or {})},
        cwd=cwd,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error: ...`` line a failed command printed; fails the test when stderr
    holds anything else or a traceback is anywhere in the output."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def profile_toml(model: Path | str, rpc_hosts: list[str], **keys: object) -> str:
    values: dict[str, object] = {
        "model": str(model),
        "rpc_hosts": rpc_hosts,
        "tensor_split": "/".join("1" for _ in rpc_hosts),
        "ctx_size": 2048,
        "parallel": 2,
        "port": 18080,
        "load_timeout_s": 120,
        "stall_timeout_s": 5,
        "ready_timeout_s": 60,
        "retries": 2,
        "retry_backoff_s": 0.5,
        **keys,
    }
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(
                f"{key} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]"
            )
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Cluster:
    """One test's view of the testbed: its hosts.toml, playbooks, state and CLI."""

    bed: Testbed
    root: Path
    bins: dict[str, Path]

    @property
    def hosts_file(self) -> Path:
        return self.root / "hosts.toml"

    @property
    def playbooks(self) -> Path:
        return self.root / "playbooks"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def write_inventory(
        self, builds: dict[str, str] | None = None, **extra: dict[str, object]
    ) -> None:
        """Every host on the current build unless ``builds`` says otherwise."""
        chosen = {
            name: str(self.bins[(builds or {}).get(name, "current")]) for name in self.bed.names
        }
        self.bed.write_inventory(self.hosts_file, chosen, extra=extra or None)

    def write_profile(self, name: str, model: Path | str, **keys: object) -> None:
        self.playbooks.mkdir(exist_ok=True)
        rpc_hosts = keys.pop("rpc_hosts", list(self.bed.names))
        assert isinstance(rpc_hosts, list)
        (self.playbooks / f"{name}.toml").write_text(profile_toml(model, rpc_hosts, **keys))

    def env(self) -> dict[str, str]:
        return {
            "CLUSTERCTL_CONFIG": str(self.hosts_file),
            "CLUSTERCTL_PLAYBOOKS": str(self.playbooks),
            "CLUSTERCTL_STATE_DIR": str(self.state_dir),
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cluster", *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env()},
            cwd=REPO,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env()},
            cwd=REPO,
        )

    def run_dir(self, host: str) -> Path:
        return Path(self.bed.host(host).run_dir)

    def log(self, host: str, component: str) -> str:
        path = self.run_dir(host) / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, host: str, component: str, needle: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log(host, component):
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in {host}/{component}.log within {timeout}s")

    def component_pid(self, host: str, component: str) -> int:
        """The component process itself (the child of its wrapper shell)."""
        leader = int((self.run_dir(host) / f"{component}.pid").read_text().split()[0])
        children = Path(f"/proc/{leader}/task/{leader}/children").read_text().split()
        assert children, f"{component} on {host} has no process under its wrapper {leader}"
        return int(children[0])

    def store(self) -> Store:
        return Store(self.state_dir)

    def wait_for_run(
        self,
        kind: str,
        process: subprocess.Popen[str],
        ready: Callable[[Store, int], bool],
        what: str,
        timeout: float = 120,
    ) -> int:
        """Poll the record until the newest run of ``kind`` is ``ready``; its id.

        Fails at once when ``process`` (the job) ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state_dir.joinpath("clusterctl.db").exists():
                with self.store() as store:
                    run_id = store.last_run_id(kind)
                    if run_id is not None and ready(store, run_id):
                        return run_id
            assert process.poll() is None, f"the {kind} ended before {what}"
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {timeout}s")


def llama_processes(bed: Testbed) -> list[str]:
    """Live llama-server / rpc-server processes in any of the testbed's namespaces."""
    namespaces = {os.stat(f"/run/netns/{bed.host(n).namespace}").st_ino: n for n in bed.names}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm not in ("llama-server", "rpc-server", "ggml-rpc-server"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            inode = os.stat(proc / "ns" / "net").st_ino
        except OSError:
            continue
        if state != "Z" and inode in namespaces:
            found.append(f"{namespaces[inode]}:{comm}:{proc.name}")
    return sorted(found)


def build_record(tag: str, protocol: str = "3.0.0", rpc_binary: str = "rpc-server") -> dict[str, Any]:
    """A host's build as a launch records it (``HostBuild.record``), with made-up digests
    derived from ``tag``: the same tag gives the same files."""
    from cluster.llamacpp.identity import BuildIdentity

    files = {
        "llama-server": hashlib.sha256(f"{tag}/llama-server".encode()).hexdigest(),
        "rpc-server": hashlib.sha256(f"{tag}/rpc-server".encode()).hexdigest(),
    }
    found = BuildIdentity.from_files(files, rpc_protocol=protocol, version=f"version: 0 ({tag})")
    return {**found.record(), "rpc_binary": rpc_binary}


def build_short(tag: str) -> str:
    """The short digest ``build_record(tag)`` is shown by."""
    return str(build_record(tag)["digest"])[:12]


FAKE_CMAKE = """cmake_minimum_required(VERSION 3.16)
project(fake C)
foreach(tool llama-server ggml-rpc-server llama-bench)
  add_executable(${tool} main.c)
  target_compile_definitions(${tool} PRIVATE TOOL="${tool}" COMMIT="${LLAMA_BUILD_COMMIT}")
  set_target_properties(${tool} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
endforeach()
"""
# __FILE__ puts the source path into the binary, as llama.cpp's asserts do.
FAKE_MAIN = """#include <stdio.h>
int main(void) { printf("version: 0 (%s) %s %s\\n", COMMIT, TOOL, __FILE__); return 0; }
"""


def fake_sdist(folder: Path, version: str, extra: str = "") -> Path:
    """An sdist laid out like llama-cpp-python's (vendored tree, the submodule's git
    record, a dangling .git pointer) whose "llama.cpp" builds in seconds."""
    top = f"llama_cpp_python-{version}"
    files = {
        f"{top}/vendor/llama.cpp/CMakeLists.txt": FAKE_CMAKE,
        f"{top}/vendor/llama.cpp/main.c": FAKE_MAIN + extra,
        f"{top}/vendor/llama.cpp/.git": "gitdir: ../../.git/modules/vendor/llama.cpp\n",
        f"{top}/.git/modules/vendor/llama.cpp/HEAD": "0123456789abcdef0123456789abcdef01234567\n",
        f"{top}/README.md": "not part of the build\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"{top}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


class DaemonWaits:
    """Waiting on a `clusterctl daemon` a test started: its status until a condition holds,
    and its log when it does not. Subclasses give ``process``, ``status`` and ``log_path``."""

    process: subprocess.Popen[str] | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def status(self) -> DaemonStatus | None:
        raise NotImplementedError

    def until(self, ready: Callable[[DaemonStatus], bool], what: str, timeout: float = 120) -> DaemonStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            status = self.status()
            if status is not None and ready(status):
                return status
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout}s\n{self.log()[-3000:]}")

    def serving(self, timeout: float = 120) -> DaemonStatus:
        return self.until(lambda s: s.state.value == "serving", "serving", timeout)

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path.exists() else ""


class DaemonProcess(DaemonWaits):
    """A `clusterctl daemon` process of the test's cluster, and a client of its API."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.socket = cluster.state_dir / "daemon.sock"
        self.process: subprocess.Popen[str] | None = None
        self.client = DaemonClient(self.socket)

    def start(self, env: dict[str, str] | None = None) -> None:
        with (self.cluster.root / "daemon.log").open("a") as log:  # the child keeps its copy
            self.process = subprocess.Popen(
                self.cluster.argv("-v", "daemon"),
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, **self.cluster.env(), **(env or {})},
                text=True,
            )
        self.until(lambda s: True, "the API answers", timeout=60)

    def status(self) -> DaemonStatus | None:
        try:
            return self.client.status()
        except Exception:
            return None

    @property
    def log_path(self) -> Path:
        return self.cluster.root / "daemon.log"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)
