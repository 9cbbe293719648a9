"""Does the controller's own work grow with the number of hosts? 8 hosts against 2.

Creates one fresh 8-host namespace testbed (evo = head, then bee, cat, dog, eel, fox, gnu,
hen; sshd on each, one 1 Gbit/s link bridge), always destroys it, and writes two
inventories on it: the first two hosts, and all eight. Each has a profile serving the tiny
model with an rpc-server on every host (split 1/1 or 1/1/1/1/1/1/1/1). Then, interleaved
(2 hosts, 8 hosts, 2, 8, ...) to spread the machine's noise, it times the real CLI in a
subprocess:

- ``clusterctl health --quick PROFILE``: every host's facts and the head's route and ping
  to each worker, the model header and memory fit. ``--quick`` leaves out the iperf3 runs,
  which stay one after the other on purpose: run at once from the head they would share
  its link and each measure a fraction (the first ``health`` of each inventory, a warm-up,
  measures and records them);
- ``clusterctl up PROFILE --skip-health``: builds read on every host, the rpc-servers
  started and waited for, llama-server loaded under the watchdog, a confirming completion;
- ``clusterctl up PROFILE`` (with the health gate);
- ``clusterctl down``.

ratio = the 8-host median / the 2-host median of the same command in the same run; the
goal is at most 1.5 for health and up. Timings are wall seconds of the whole command,
Python start-up included.

Every "host" of the testbed runs on this machine's cores, so each host's own work (its sshd
sessions, the shells and tools each fact runs) is CPU the hosts share here and would not
share on real machines. So each command's CPU is measured too: the controller's (the CLI
process and its children) and the hosts' (each host's sshd with every session it reaped,
from /proc/PID/stat). ``cpu`` is their sum in core-seconds and ``floor`` = cpu / cores, the
wall time the command cannot beat on this machine however concurrent the controller is:
wall near the floor means the testbed's cores, not the controller's waiting, set the time.
Most of the hosts' CPU is the shell that runs each command: bash sources the login user's
``~/.bashrc`` for every command over ssh, and a heavy one (pyenv or conda init: ~0.1
core-second) on every command of eight hosts sharing two cores is most of the cost.
``--clean-shell`` builds the testbed with hosts that skip it (``TestbedSpec.clean_shell``),
so the figures are this controller's, not this machine's dotfiles'.

``--baseline DIR`` runs a second source tree's CLI (a ``git worktree`` of an older commit)
on the same testbed, interleaved with this one's (its own inventories and state), and
prints its tables too: before and after a change, measured in one run.

Usage (root): .venv/bin/python benchmarks/scale_benchmark.py [--repeat N] [--hosts N]
    [--clean-shell] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.testbed.bed import Testbed, TestbedSpec, create
from cluster.testbed.models import TINY, cached_model
from cluster.testbed.tomltext import toml_value

REPO = Path(__file__).resolve().parent.parent
PORT = 18080
# What each timed command runs (the profile is ``scale``).
COMMANDS = {
    "health --quick": ["health", "--quick", "scale"],
    "up --skip-health": ["up", "scale", "--skip-health"],
    "up": ["up", "scale"],
    "down": ["down"],
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Times = dict[tuple[str, int, str], list[float]]  # (tree, hosts, command) -> samples


class Cluster:
    """One inventory on the shared testbed: its hosts, profile, state, and the CLI of one
    source tree."""

    def __init__(
        self, bed: Testbed, root: Path, bins: Path, model: Path, names: list[str], tree: Path
    ) -> None:
        self.bed, self.names, self.root, self.tree = bed, names, root, tree
        hosts = root / "hosts.toml"
        bed.write_inventory(hosts, {name: str(bins) for name in bed.names})
        keep_only(hosts, names)
        (root / "playbooks").mkdir()
        values: dict[str, object] = {
            "model": str(model), "rpc_hosts": names, "tensor_split": "/".join("1" for _ in names),
            "ctx_size": 2048, "parallel": 2, "port": PORT, "load_timeout_s": 120,
            "stall_timeout_s": 10, "ready_timeout_s": 60, "retries": 0,
        }
        text = "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())
        (root / "playbooks" / "scale.toml").write_text(text)
        self.env = {**os.environ, "CLUSTERCTL_CONFIG": str(hosts),
                    "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
                    "CLUSTERCTL_STATE_DIR": str(root / "state")}

    def run(self, args: list[str], timeout: float = 300) -> tuple[float, float]:
        """Wall seconds and CPU core-seconds (controller and hosts) of one command."""
        cpu = cpu_seconds(self.bed)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env, cwd=self.tree,
                              check=False)
        seconds = time.monotonic() - start
        time.sleep(0.3)  # each host's sshd reaps the sessions that ended with the command
        cpu = cpu_seconds(self.bed) - cpu
        if done.returncode != 0:
            raise RuntimeError(f"{len(self.names)} hosts: clusterctl {' '.join(args)} failed "
                               f"({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return seconds, cpu


def cpu_seconds(bed: Testbed) -> float:
    """CPU core-seconds so far of this process's reaped children (each CLI run) and of every
    testbed host's sshd with the sessions it reaped."""
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for name in bed.names:
        pid = bed.host(name).sshd.pid
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(field) for field in stat[11:15]) / tick  # utime stime cutime cstime
    return total


def keep_only(hosts_toml: Path, names: list[str]) -> None:
    """Drop the ``[hosts.X]`` tables of hosts not in ``names`` from a written inventory."""
    blocks = hosts_toml.read_text().split("\n\n")
    kept = [block for block in blocks
            if not block.startswith("[hosts.") or block.split("]", 1)[0][7:] in names]
    hosts_toml.write_text("\n\n".join(kept))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--hosts", type=int, default=8, help="the larger cluster (default 8)")
    parser.add_argument("--clean-shell", action="store_true",
                        help="hosts run commands without the login user's ~/.bashrc")
    parser.add_argument("--baseline", type=Path,
                        help="another source tree whose CLI runs interleaved with this one's")
    args = parser.parse_args()
    trees = {"this tree": REPO}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    if os.geteuid() != 0:
        print("error: scale_benchmark needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    bins = ensure_build(GENERATIONS["current"], say=say)
    model = cached_model(TINY)[0]
    root = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    times: Times = {}
    cpus: Times = {}
    try:
        spec = TestbedSpec(
            n_hosts=args.hosts, root=root / "bed", link_rate="1gbit", clean_shell=args.clean_shell
        )
        with create(spec) as bed:
            say(f"testbed {bed.tag} with {len(bed.names)} hosts up under {root}")
            sizes = {2: bed.names[:2], args.hosts: bed.names}
            clusters = {
                (label, n): Cluster(bed, root / f"{label.replace(' ', '-')}-h{n}", bins, model,
                                    names, tree)
                for label, tree in trees.items() for n, names in sizes.items()
            }
            try:
                for (label, n), cluster in clusters.items():  # iperf3 recorded, caches warm
                    cluster.run(["health", "scale"])
                    cluster.run(COMMANDS["up --skip-health"])
                    cluster.run(COMMANDS["down"])
                    say(f"warm-up of {label} with {n} hosts done")
                for round_ in range(1, args.repeat + 1):
                    for (label, n), cluster in clusters.items():
                        for command, argv in COMMANDS.items():
                            seconds, cpu = cluster.run(argv)
                            times.setdefault((label, n, command), []).append(seconds)
                            cpus.setdefault((label, n, command), []).append(cpu)
                            if command == "up --skip-health":
                                cluster.run(COMMANDS["down"])
                        say(f"round {round_}, {label}, {n} hosts: " + ", ".join(
                            f"{c} {times[(label, n, c)][-1]:.2f}s" for c in COMMANDS))
            finally:
                for cluster in clusters.values():
                    subprocess.run([sys.executable, "-m", "cluster", "down"], env=cluster.env,
                                   cwd=cluster.tree, capture_output=True, timeout=120,
                                   check=False)
    except BaseException:
        say(f"kept {root} for inspection (the testbed itself is destroyed)")
        raise
    shutil.rmtree(root, ignore_errors=True)
    say(f"clean shell: {args.clean_shell}")
    for label, tree in trees.items():
        print(f"\n=== {label}: {tree}")
        report(times, cpus, label, args.hosts)
    return 0


def report(times: Times, cpus: Times, label: str, big: int) -> None:
    rounds = len(times[(label, 2, "down")])
    print(f"\nwall seconds of each command, tiny model, {rounds} interleaved rounds; "
          f"ratio = {big}-host median / 2-host median")
    print(f"{'command':28}{'2 hosts':>9}{'min':>7}{'max':>7}{f'{big} hosts':>9}"
          f"{'min':>7}{'max':>7}{'ratio':>7}")
    for command in COMMANDS:
        small, large = times[(label, 2, command)], times[(label, big, command)]
        print(f"{command:28}{statistics.median(small):9.2f}{min(small):7.2f}{max(small):7.2f}"
              f"{statistics.median(large):9.2f}{min(large):7.2f}{max(large):7.2f}"
              f"{statistics.median(large) / statistics.median(small):7.2f}")

    cores = os.cpu_count() or 1
    print(f"\nCPU core-seconds (controller + hosts' sshd sessions), medians; floor = cpu / "
          f"{cores} cores")
    print(f"{'command':28}{'2: cpu':>8}{'floor':>7}{'wall':>7}{f'{big}: cpu':>9}{'floor':>7}"
          f"{'wall':>7}{'cpu ratio':>10}")
    for command in COMMANDS:
        cpu_small = statistics.median(cpus[(label, 2, command)])
        cpu_large = statistics.median(cpus[(label, big, command)])
        print(f"{command:28}{cpu_small:8.2f}{cpu_small / cores:7.2f}"
              f"{statistics.median(times[(label, 2, command)]):7.2f}{cpu_large:9.2f}"
              f"{cpu_large / cores:7.2f}{statistics.median(times[(label, big, command)]):7.2f}"
              f"{cpu_large / cpu_small:10.2f}")


if __name__ == "__main__":
    sys.exit(main())
