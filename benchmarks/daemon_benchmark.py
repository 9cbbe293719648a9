"""How fast the daemon brings a profile back, and how fast it sees a hung request.

Creates a fresh 2-host namespace testbed (evo = head, bee), always destroys it, and prints,
measured in one run:

1. Cold ``clusterctl up tiny`` (the real CLI, health gate included) against the daemon's
   recovery after llama-server is SIGKILLed: from the kill to the daemon's status saying
   it serves again with new pids (the probe interval is the daemon's default, 5 s, unless
   ``--probe``). ratio = median recovery / median cold up.
2. Detection of a hang mid-request: a long completion is generating when bee's rpc-server
   is SIGSTOPped; latency = the incident's start - the SIGSTOP. ratio = latency / the
   profile's stall timeout (1 would be exactly on time).

Usage (root): .venv/bin/python benchmarks/daemon_benchmark.py [--repeat N] [--probe S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.daemon.client import DaemonClient
from cluster.daemon.models import DaemonStatus
from cluster.testbed.bed import Testbed, TestbedSpec, create
from cluster.testbed.models import TINY, cached_model

REPO = Path(__file__).resolve().parent.parent
STALL = 5.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Setup:
    def __init__(self, bed: Testbed, root: Path, bins: Path, model: Path, probe: float) -> None:
        self.bed, self.root = bed, root
        hosts = bed.write_inventory(root / "hosts.toml", {n: str(bins) for n in bed.names})
        with hosts.open("a") as handle:
            handle.write(f"\n[daemon]\nprobe_interval_s = {probe}\n")
        (root / "playbooks").mkdir()
        (root / "playbooks" / "tiny.toml").write_text(
            f'model = "{model}"\nrpc_hosts = ["evo", "bee"]\ntensor_split = "1/1"\n'
            f"ctx_size = 8192\nparallel = 1\nport = 18080\nstall_timeout_s = {STALL}\n"
            "load_timeout_s = 120\nretries = 2\nretry_backoff_s = 1\n"
        )
        self.env = {
            **os.environ,
            "CLUSTERCTL_CONFIG": str(hosts),
            "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
            "CLUSTERCTL_STATE_DIR": str(root / "state"),
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cluster", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO,
            timeout=600,
            check=False,
        )

    def component(self, host: str, name: str) -> int:
        run_dir = Path(self.bed.host(host).run_dir)
        leader = int((run_dir / f"{name}.pid").read_text().split()[0])
        return int(Path(f"/proc/{leader}/task/{leader}/children").read_text().split()[0])


def wait(client: DaemonClient, ready: object, timeout: float = 120) -> DaemonStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = client.status()
        except Exception:
            time.sleep(0.05)
            continue
        if ready(status):  # type: ignore[operator]
            return status
        time.sleep(0.05)
    raise SystemExit("the daemon did not get there in time")


def cold_up(setup: Setup) -> float:
    start = time.monotonic()
    result = setup.cli("up", "tiny")
    took = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"up failed: {result.stderr}")
    setup.cli("down")
    return took


def recovery(setup: Setup, client: DaemonClient) -> float:
    before = wait(client, lambda s: s.state.value == "serving")
    killed = time.monotonic()
    os.kill(setup.component("evo", "llama-server"), signal.SIGKILL)
    wait(client, lambda s: s.state.value == "serving" and s.serving.pids != before.serving.pids)
    return time.monotonic() - killed


def hang(setup: Setup, client: DaemonClient) -> float:
    before = wait(client, lambda s: s.state.value == "serving")
    seen = len(before.incidents)
    curl = setup.bed.popen(
        "evo",
        ["curl", "-s", "-m", "120", "http://127.0.0.1:18080/completion", "-d",
         '{"prompt": "hi", "n_predict": 6000, "ignore_eos": true}'],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        os.kill(setup.component("bee", "rpc-server"), signal.SIGSTOP)
        stopped = time.time()
        status = wait(client, lambda s: len(s.incidents) > seen, timeout=60)
    finally:
        curl.kill()
        curl.wait()
    return status.incidents[0].started - stopped


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--probe", type=float, default=5.0)
    args = parser.parse_args()
    bins = ensure_build(GENERATIONS["current"], say=say)
    model = cached_model(TINY)[0]
    root = Path(tempfile.mkdtemp(prefix="clusterctl-daemon-bench-"))
    try:
        with create(TestbedSpec(n_hosts=2, root=root / "bed", link_rate="1gbit")) as bed:
            setup = Setup(bed, root, bins, model, args.probe)
            ups = [cold_up(setup) for _ in range(args.repeat)]
            say(f"cold up: {', '.join(f'{t:.2f}' for t in ups)} s")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "cluster", "daemon"],
                env=setup.env,
                cwd=REPO,
                stderr=subprocess.DEVNULL,
            )
            client = DaemonClient(root / "state" / "daemon.sock")
            try:
                wait(client, lambda s: True)
                client.set_desired("tiny")
                recoveries = [recovery(setup, client) for _ in range(args.repeat)]
                say(f"recoveries: {', '.join(f'{t:.2f}' for t in recoveries)} s")
                hangs = [hang(setup, client) for _ in range(args.repeat)]
                say(f"hang detection: {', '.join(f'{t:.2f}' for t in hangs)} s")
                client.set_desired(None)
                wait(client, lambda s: s.state.value == "idle")
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
                client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    up, back, seen = (statistics.median(x) for x in (ups, recoveries, hangs))
    print(f"| measure (median of {args.repeat}) | seconds | ratio |")
    print("|---|---|---|")
    print(f"| cold `clusterctl up tiny` | {up:.2f} | 1 |")
    print(
        f"| recovery after SIGKILL of llama-server (probe every {args.probe:g} s) | "
        f"{back:.2f} | {back / up:.2f} of a cold up |"
    )
    print(
        f"| detection of a hang mid-request (stall timeout {STALL:g} s) | {seen:.2f} | "
        f"{seen / STALL:.2f} of the stall timeout |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
