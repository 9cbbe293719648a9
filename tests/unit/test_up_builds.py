"""One ``up`` reads each host's llama.cpp build once: the health gate's reading is the
launch's (the digests of the build's files, ``--help``, ``--version``).

The real ``python -m cluster up`` in a subprocess, against two local-transport hosts whose
llama.cpp folders hold stand-in binaries: ``llama-server`` answers ``--help`` and
``--version`` with the current build's recorded texts and writes down every call in its own
folder, so each host's calls count its build readings; ``rpc-server`` prints the current
build's banner and exits, which fails the launch's only attempt right after the builds
were read (no real llama.cpp, no root).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import clusterctl

from cluster.errors import EXIT_LAUNCH
from cluster.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "llamacpp"

HOST = """
[hosts.{name}]
transport = "local"
link_address = "{address}"
link_interface = "lo"
rpc_port = {port}
llama_bin_dir = "{root}/bin-{name}"
run_dir = "{root}/run/{name}"
"""

LLAMA_SERVER = """#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/calls"
case "$1" in
  --help) cat "$here/help.txt" ;;
  --version) cat "$here/version.txt" ;;
esac
"""

RPC_SERVER = """#!/bin/sh
cat "$(dirname "$0")/banner.txt"
exit 1
"""


@pytest.fixture
def config(tmp_path: Path) -> dict[str, str]:
    hosts = '[cluster]\nhead = "a"\n'
    for index, name in enumerate(("a", "b")):
        hosts += HOST.format(
            name=name, address=f"127.0.0.{index + 2}", port=47152 + index, root=tmp_path
        )
        bin_dir = tmp_path / f"bin-{name}"
        bin_dir.mkdir()
        for binary, text in (("llama-server", LLAMA_SERVER), ("rpc-server", RPC_SERVER)):
            (bin_dir / binary).write_text(text)
            (bin_dir / binary).chmod(0o755)
        for kind, source in (
            ("help", "help/current-llama-server.txt"),
            ("version", "version/current-llama-server.txt"),
            ("banner", "rpc_banner/current-plain.txt"),
        ):
            (bin_dir / f"{kind}.txt").write_text((FIXTURES / source).read_text())
    (tmp_path / "hosts.toml").write_text(hosts)
    (tmp_path / "m.gguf").write_bytes(b"not a model: the gate only warns that it cannot read it")
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.toml").write_text(
        f'model = "{tmp_path / "m.gguf"}"\nrpc_hosts = ["a", "b"]\ntensor_split = "1/1"\n'
        "port = 47180\nretries = 0\n"
    )
    return {
        "CLUSTERCTL_CONFIG": str(tmp_path / "hosts.toml"),
        "CLUSTERCTL_STATE_DIR": str(tmp_path / "state"),
    }


def build_readings(tmp_path: Path) -> dict[str, int]:
    """How many times each host's build was read: its llama-server's ``--version`` calls
    (every reading asks once, with one ``--help``)."""
    readings = {}
    for name in ("a", "b"):
        calls = (tmp_path / f"bin-{name}" / "calls").read_text().splitlines()
        assert calls.count("--help") == calls.count("--version"), calls
        readings[name] = calls.count("--version")
    return readings


def failed_attempt(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("attempt 1 failed")]
    return line


def recorded_digests(state: Path) -> dict[str, str]:
    """Each host's build digest as the launch's attempt recorded it."""
    with Store(state) as store:
        [run] = store.runs("launch")
        [attempt] = store.attempts(run.id)
    return {name: build["digest"] for name, build in attempt.builds.items()}


@pytest.mark.parametrize("gated", [True, False])
def test_one_up_reads_each_hosts_build_once(
    tmp_path: Path, config: dict[str, str], gated: bool
) -> None:
    args = ["up", "p"] if gated else ["up", "p", "--skip-health"]
    result = clusterctl(*args, env=config)
    assert result.returncode == EXIT_LAUNCH, result.stderr
    assert ("health gate for p..." in result.stderr) is gated
    assert " exited: exit status 1" in failed_attempt(result.stderr)  # the launch ran
    assert build_readings(tmp_path) == {"a": 1, "b": 1}
    # The launch recorded every host's build all the same, gated or not.
    digests = recorded_digests(tmp_path / "state")
    assert set(digests) == {"a", "b"} and digests["a"] == digests["b"] and len(digests["a"]) == 64


@pytest.mark.parametrize(("gated", "readings"), [(True, 2), (False, 1)])
def test_a_bench_reads_each_hosts_build_once_more_only_for_its_gate(
    tmp_path: Path, config: dict[str, str], gated: bool, readings: int
) -> None:
    """bench first looks for a running server of the same build (one reading), then the
    gate reads the hosts; the launch after it reads nothing again."""
    args = ["bench", "p"] if gated else ["bench", "p", "--skip-health"]
    result = clusterctl(*args, env=config)
    assert result.returncode == EXIT_LAUNCH, result.stderr
    assert " exited: exit status 1" in failed_attempt(result.stderr)  # the launch ran
    assert build_readings(tmp_path) == {"a": readings, "b": readings}
