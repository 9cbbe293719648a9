"""How long ``clusterctl health PROFILE`` takes on the testbed, with and without iperf3.

Creates a fresh 2-host namespace testbed (evo = head, bee; 1 Gbit/s link), always destroys
it, and times the real CLI in a subprocess, interleaved to spread the noise:

- ``--throughput``: iperf3 over every head -> worker link, as every ``health`` did before
  measurements were kept;
- default: the last measurement is younger than ``--throughput-max-age`` (a ``--throughput``
  run just before), so it is shown with its age and nothing is measured;
- ``--quick``: never measures.

Prints each kind's median, min and max wall seconds and the ratio to ``--throughput``.

Usage (root): .venv/bin/python benchmarks/health_benchmark.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.testbed.bed import TestbedSpec, create
from cluster.testbed.models import TINY, cached_model

REPO = Path(__file__).resolve().parent.parent
KINDS = {"--throughput": ["--throughput"], "default": [], "--quick": ["--quick"]}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Wall seconds of ``clusterctl health tiny --json ARGS`` and the throughput row's detail."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "health", "tiny", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=300,
    )
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"health {' '.join(args)} failed ({result.returncode}): {result.stdout}")
    checks = json.loads(result.stdout)["checks"]
    [row] = [c for c in checks if c["name"].startswith("throughput")]
    return seconds, f"{row['value']}: {row['detail']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bins = ensure_build(GENERATIONS["current"], say=say)
    model = cached_model(TINY)[0]
    with tempfile.TemporaryDirectory(prefix="health-bench-") as tmp:
        root = Path(tmp)
        with create(TestbedSpec(n_hosts=2, root=root / "bed", link_rate="1gbit")) as bed:
            bed.write_inventory(root / "hosts.toml", {name: str(bins) for name in bed.names})
            (root / "playbooks").mkdir()
            (root / "playbooks" / "tiny.toml").write_text(
                f'model = "{model}"\nrpc_hosts = ["evo", "bee"]\ntensor_split = "1/1"\n'
                "ctx_size = 2048\nport = 18080\n"
            )
            env = {
                **os.environ,
                "CLUSTERCTL_CONFIG": str(root / "hosts.toml"),
                "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
                "CLUSTERCTL_STATE_DIR": str(root / "state"),
            }
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for round_ in range(args.repeat):
                for kind, flags in KINDS.items():
                    seconds, row = timed(env, *flags)
                    times[kind].append(seconds)
                    say(f"round {round_ + 1} {kind:>12}: {seconds:5.2f} s  ({row})")
    base = statistics.median(times["--throughput"])
    print(f"health tiny on a 2-host testbed, {args.repeat} runs each (wall s)")
    print(f"{'kind':>14} {'median':>7} {'min':>6} {'max':>6} {'ratio':>6}")
    for kind, values in times.items():
        median = statistics.median(values)
        print(
            f"{kind:>14} {median:7.2f} {min(values):6.2f} {max(values):6.2f} {median / base:6.2f}"
        )


if __name__ == "__main__":
    main()
