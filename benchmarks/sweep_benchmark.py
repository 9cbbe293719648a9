"""What a split sweep costs per point on the rate-limited testbed link, against its floor.

Creates a fresh 2-host namespace testbed (evo = head, bee) with the direct link limited to
``--rate`` (default 200mbit), always destroys it, and prints:

1. Cold load against cached reload of the same model (LOADABLE_SLOW, 308 MB, 6 layers):
   ``clusterctl up`` with both rpc-servers' tensor caches emptied (every weight for bee
   crosses the link), then ``up`` again with the caches kept (llama-server sends hashes,
   bee's rpc-server reads its cached tensors from disk). ratio = cold / cached.
2. A grid sweep of ``--points`` splits through the real CLI. Per point: wall time (from the
   previous point's record to this one's), and its floor: the load seconds the watchdog
   measured plus the time the measured requests took (sum of their end-to-end times).
   ratio = wall / floor; the rest is the controller's own work (reload bookkeeping,
   calibration, /tokenize of each prompt, health checks).

Usage (root): .venv/bin/python benchmarks/sweep_benchmark.py [--rate 200mbit] [--points 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.store import Store
from cluster.testbed.bed import TestbedSpec, create
from cluster.testbed.models import LOADABLE_SLOW, cached_model
from cluster.testbed.tomltext import toml_value

REPO = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="200mbit")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="cold/cached load pairs")
    args = parser.parse_args()
    bins = ensure_build(GENERATIONS["current"], say=say)
    model = cached_model(LOADABLE_SLOW)[0]
    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    bed = create(TestbedSpec(n_hosts=2, root=root / "bed", link_rate=args.rate))
    try:
        bed.write_inventory(root / "hosts.toml", {name: str(bins) for name in bed.names})
        (root / "playbooks" / "sweeps").mkdir(parents=True)
        profile = {
            "model": str(model), "rpc_hosts": list(bed.names), "tensor_split": "1/1",
            "ctx_size": 2048, "parallel": 1, "port": 18080, "load_timeout_s": 600,
            "stall_timeout_s": 60, "ready_timeout_s": 120, "retries": 1,
        }  # fmt: skip
        (root / "playbooks" / "slow.toml").write_text(
            "".join(f"{key} = {toml_value(value)}\n" for key, value in profile.items())
        )
        env = {
            **os.environ,
            "CLUSTERCTL_CONFIG": str(root / "hosts.toml"),
            "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
            "CLUSTERCTL_STATE_DIR": str(root / "state"),
        }

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "cluster", *argv],
                capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=1800,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"clusterctl {' '.join(argv)}: {done.stderr[-2000:]}")
            return done

        def last_load() -> float:
            with Store(root / "state") as store:
                run = store.runs(kind="launch", limit=1)[0]
                return float(run.summary["load_seconds"])

        cold, cached = [], []
        for round_ in range(args.repeat):
            cli("down")
            for name in bed.names:
                shutil.rmtree(bed.host(name).rpc_cache_dir, ignore_errors=True)
                bed.host(name).rpc_cache_dir.mkdir(parents=True)
            cli("up", "slow", "--skip-health")
            cold.append(last_load())
            cli("up", "slow", "--skip-health")  # everything restarted; caches on disk stay
            cached.append(last_load())
            say(f"round {round_ + 1}: cold {cold[-1]:.1f}s, cached {cached[-1]:.1f}s")
        cli("down")

        step = 0.8 / max(1, args.points - 1)
        firsts = [round(0.6 + i * step, 3) for i in range(args.points)]
        splits = ", ".join(f'"{a:g}/{2 - a:g}"' for a in firsts)
        (root / "playbooks" / "sweeps" / "bench.toml").write_text(
            f'profile = "slow"\nsplits = [{splits}]\ninclude_current = false\n'
            '[measure]\nshape = "random"\ntokens = 256\ngen = 32\nrepeat = 2\nwarmup = 1\n'
        )
        started = time.time()
        cli("sweep", "bench", "--skip-health")
        with Store(root / "state") as store:
            run = store.runs(kind="sweep", limit=1)[0]
            results = store.results(run.id)
        previous = started
        rows = []
        for result in results:
            metrics = result.metrics
            measured = sum(s["e2e_s"] for s in metrics.get("samples", []))
            load = metrics.get("load_seconds") or 0.0
            wall = result.created_at - previous
            previous = result.created_at
            rows.append((result.spec["split"], wall, load, measured))
        cli("down")
    finally:
        bed.destroy()
        shutil.rmtree(root, ignore_errors=True)

    size_mb = model.stat().st_size / 1e6
    print(f"# sweep benchmark: {model.name} ({size_mb:.0f} MB), link {args.rate}")
    print()
    print("| load | median s | runs |")
    print("|---|---|---|")
    for label, values in (
        ("cold (caches emptied)", cold),
        ("cached (same model, tensor cache on disk)", cached),
    ):
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {label} | {statistics.median(values):.2f} | {listed} |")
    print(f"\ncold / cached = {statistics.median(cold) / statistics.median(cached):.2f}")
    print()
    print("| split | wall s | load s | requests s | floor s | wall / floor |")
    print("|---|---|---|---|---|---|")
    for split, wall, load, measured in rows:
        floor = load + measured
        cells = (wall, load, measured, floor, wall / floor)
        print(f"| {split} | " + " | ".join(f"{cell:.2f}" for cell in cells) + " |")
    walls = [r[1] for r in rows[1:]] or [rows[0][1]]
    floors = [r[2] + r[3] for r in rows[1:]] or [rows[0][2] + rows[0][3]]
    ratios = [wall / floor for wall, floor in zip(walls, floors, strict=True)]
    print(f"\nmedian wall / floor after the first point: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
