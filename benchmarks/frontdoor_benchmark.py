"""What the front door costs: TTFT and generation rate through the daemon's /v1 against
llama-server directly, measured side by side in one run, and the latency it adds.

Creates a fresh 2-host namespace testbed, starts the daemon serving the tiny model with a
TCP listener on this machine's loopback, and alternates the same streamed
``/v1/completions`` request between the two paths (the direct one through an ssh tunnel to
the head's loopback, as the front door itself reaches it; the front door's one adds its
own hop on top). For each: client TTFT (request sent to first streamed chunk), client
generation rate (chunks after the first over their time), and end-to-end time; the added
latency is the median difference of end-to-end times of short non-streamed requests.

Usage (root): .venv/bin/python benchmarks/frontdoor_benchmark.py [--repeat N] [--gen N]
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

import httpx

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.daemon.client import DaemonClient
from cluster.testbed.bed import TestbedSpec, create
from cluster.testbed.models import TINY, cached_model

REPO = Path(__file__).resolve().parent.parent
PORT, TUNNEL = 18767, 18768


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def streamed(url: str, gen: int, headers: dict[str, str]) -> tuple[float, float, float]:
    """(TTFT s, tokens per second after the first, end-to-end s) of one streamed request."""
    body = {"prompt": "Hello", "max_tokens": gen, "stream": True, "ignore_eos": True}
    arrivals = []
    sent = time.perf_counter()
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data:") and "[DONE]" not in line:
                arrivals.append(time.perf_counter())
    ttft = arrivals[0] - sent
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return ttft, rate, arrivals[-1] - sent


def short(url: str, headers: dict[str, str]) -> float:
    body = {"prompt": "Hi", "max_tokens": 1}
    sent = time.perf_counter()
    httpx.post(url, json=body, headers=headers, timeout=60).raise_for_status()
    return time.perf_counter() - sent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--gen", type=int, default=256)
    args = parser.parse_args()
    bins = ensure_build(GENERATIONS["current"], say=say)
    model = cached_model(TINY)[0]
    root = Path(tempfile.mkdtemp(prefix="clusterctl-frontdoor-bench-"))
    key = "bench-key"
    try:
        with create(TestbedSpec(n_hosts=2, root=root / "bed", link_rate="1gbit")) as bed:
            hosts = bed.write_inventory(root / "hosts.toml", {n: str(bins) for n in bed.names})
            with hosts.open("a") as handle:
                handle.write(f'\n[daemon]\nlisten = "127.0.0.1:{PORT}"\nkeys_env = "KEYS"\n')
            (root / "playbooks").mkdir()
            (root / "playbooks" / "tiny.toml").write_text(
                f'model = "{model}"\nrpc_hosts = ["evo", "bee"]\ntensor_split = "1/1"\n'
                "ctx_size = 8192\nparallel = 1\nport = 18080\n"
            )
            env = {
                **os.environ,
                "CLUSTERCTL_CONFIG": str(hosts),
                "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
                "CLUSTERCTL_STATE_DIR": str(root / "state"),
                "KEYS": key,
            }
            daemon = subprocess.Popen(
                [sys.executable, "-m", "cluster", "daemon"], env=env, cwd=REPO,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            tunnel = subprocess.Popen(
                [*bed.ssh_argv("evo"), "-N", "-L", f"{TUNNEL}:127.0.0.1:18080"],
                stderr=subprocess.DEVNULL,
            )
            client = DaemonClient(root / "state" / "daemon.sock")
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        client.set_desired("tiny")
                        if client.status().state.value == "serving":
                            break
                    except Exception:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("the daemon did not serve")
                    time.sleep(0.2)
                door = f"http://127.0.0.1:{PORT}/v1/completions"
                direct = f"http://127.0.0.1:{TUNNEL}/v1/completions"
                auth = {"Authorization": f"Bearer {key}"}
                for url, headers in ((door, auth), (direct, {})):  # warm both paths
                    streamed(url, 16, headers)
                runs: dict[str, list[tuple[float, float, float]]] = {"door": [], "direct": []}
                shorts: dict[str, list[float]] = {"door": [], "direct": []}
                for _ in range(args.repeat):
                    runs["door"].append(streamed(door, args.gen, auth))
                    runs["direct"].append(streamed(direct, args.gen, {}))
                    shorts["door"].append(short(door, auth))
                    shorts["direct"].append(short(direct, {}))
            finally:
                tunnel.terminate()
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
                client.close()
                subprocess.run(
                    [sys.executable, "-m", "cluster", "down"], env=env, cwd=REPO,
                    capture_output=True, check=False,
                )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(path: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[path])

    print(f"| median of {args.repeat}, {args.gen} tokens streamed | direct | front door | ratio |")
    print("|---|---|---|---|")
    measures = (("TTFT", 0, "s"), ("tg (client)", 1, "tok/s"), ("end to end", 2, "s"))
    for label, index, unit in measures:
        d, f = med("direct", index), med("door", index)
        print(f"| {label} ({unit}) | {d:.4f} | {f:.4f} | {f / d:.2f} |")
    added = statistics.median(shorts["door"]) - statistics.median(shorts["direct"])
    print(f"| added latency of a 1-token request (s) | | {added:.4f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
