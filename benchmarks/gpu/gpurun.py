"""The whole pipeline on a machine with an NVIDIA GPU, at a real model size.

Two "hosts" of one machine on the local transport, plus the head:
- ``ctl``: the head; llama-server only, with no GPU of its own (``CUDA_VISIBLE_DEVICES=``);
- ``gpu``: an rpc-server pinned to GPU 0 through its ``env``, with a memory budget that
  keeps it from taking the whole model (so the split has a real optimum);
- ``cpu``: an rpc-server on the CPU (no GPU visible), every core.
The model is a generated mixture of experts of ~16 GB (``bigmodel.py``); llama.cpp is
built with CUDA by the project's own builder from the carried, trimmed sdist.

Steps (each fits one device call; state is kept in WORK between calls of one lease):

    prepare   build llama.cpp (CUDA), write the model, the inventory and the playbooks
    core      health (memory fit estimate against what each rpc-server took), up against
              the manual sequence, a hang injected during the load, bench against
              llama-bench on the same split, a cold load against a cached reload
    grid      a grid sweep over the GPU's share
    adaptive  the adaptive sweep over the same range

Every figure goes to WORK/results/STEP.json and is copied to $OUT.

Usage (on the GPU machine): python3 benchmarks/gpu/gpurun.py STEP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
# GPU_LOCAL_TEST=1: the same steps on this machine's CPU build with a small model, to try
# the script before spending device time on it.
LOCAL = os.environ.get("GPU_LOCAL_TEST") == "1"
WORK = Path(os.environ.get("GPU_WORK", "/root/gpuwork"))
CACHE = WORK / "cache"
MODEL = WORK / "models" / "gpu-moe.gguf"
PROFILE = "gpumoe"
STALL = 20.0
GPU_BUDGET_GIB = 10.5 if not LOCAL else 0.15
SWEEP_FROM, SWEEP_TO = os.environ.get("SWEEP_RANGE", "0.2/0.8:0.9/0.1").split(":")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def env() -> dict[str, str]:
    return {
        **os.environ,
        "CLUSTERCTL_CACHE": str(CACHE),
        "CLUSTERCTL_CONFIG": str(WORK / "hosts.toml"),
        "CLUSTERCTL_PLAYBOOKS": str(WORK / "playbooks"),
        "CLUSTERCTL_STATE_DIR": str(WORK / "state"),
    }


def cli(*args: str, timeout: float = 580) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cluster", *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    say(f"clusterctl {' '.join(args)}: exit {done.returncode} in {time.monotonic() - started:.1f}s")
    if done.returncode not in (0, 1):
        say(done.stderr[-2000:])
    return done


def bins() -> Path:
    record = json.loads((WORK / "bins.json").read_text())
    return Path(record["bin_dir"])


def save(step: str, figures: dict[str, Any]) -> None:
    folder = WORK / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{step}.json"
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    out = os.environ.get("OUT")
    if out:
        shutil.copy(path, Path(out) / path.name)
    say(f"{step}: {json.dumps(figures, default=str)[:3000]}")


# --- prepare ------------------------------------------------------------------------------


def memory_bandwidth_gbs() -> float:
    """This machine's memory copy rate with numpy (bytes read + written over time)."""
    import numpy as np

    a = np.ones(1 << 29, dtype=np.float64)  # 4 GiB
    b = np.empty_like(a)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - start) / 1e9)
    return best


def prepare() -> None:
    from cluster.builds.local import ensure_build
    from cluster.builds.recipe import GENERATIONS, Recipe

    WORK.mkdir(parents=True, exist_ok=True)
    sdist_dir = CACHE / "llama.cpp" / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    carried = REPO / ".gpu" / "llama_cpp_python-0.3.36.tar.gz"
    shutil.copy(carried, sdist_dir / carried.name)
    os.environ["CLUSTERCTL_CACHE"] = str(CACHE)
    recipe = (
        Recipe(GENERATIONS["current"])
        if LOCAL
        else Recipe(GENERATIONS["current"], "cuda", ("-DCMAKE_CUDA_ARCHITECTURES=90", "-GNinja"))
    )
    if LOCAL:  # the CPU build this machine already has
        os.environ["CLUSTERCTL_CACHE"] = str(Path.home() / ".cache" / "clusterctl")
        shape = ["--layers", "4", "--embd", "1024", "--ff", "1024"]
    else:
        shape = ["--layers", "12", "--embd", "6144", "--ff", "4096"]
    started = time.monotonic()
    bin_dir = ensure_build(recipe, jobs=os.cpu_count(), say=say)
    build_s = time.monotonic() - started
    (WORK / "bins.json").write_text(json.dumps({"bin_dir": str(bin_dir)}))
    started = time.monotonic()
    made = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu" / "bigmodel.py"), str(MODEL), *shape,
         "--experts", "8", "--used", "2"],
        capture_output=True, text=True, check=True, cwd=REPO, env=env(),
    )  # fmt: skip
    model_s = time.monotonic() - started
    cpu_gbs = memory_bandwidth_gbs()
    write_config(bin_dir, cpu_gbs)
    save(
        "prepare",
        {
            "build_s": round(build_s, 1),
            "model": made.stdout.strip(),
            "model_s": round(model_s, 1),
            "cpu_copy_gbs": round(cpu_gbs, 1),
            "gpu": "" if LOCAL else subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                capture_output=True, text=True, check=False,
            ).stdout.strip(),
            "cores": os.cpu_count(),
        },
    )


def write_config(bin_dir: Path, cpu_gbs: float) -> None:
    def host(name: str, address: str, extra: str) -> str:
        return (
            f'\n[hosts.{name}]\ntransport = "local"\nlink_address = "{address}"\n'
            f'link_interface = "lo"\nllama_bin_dir = "{bin_dir}"\n'
            f'run_dir = "{WORK}/run/{name}"\nrpc_cache_dir = "{WORK}/rpc-cache/{name}"\n{extra}'
        )

    hosts = (
        f'[cluster]\nname = "h200"\nhead = "ctl"\n\n[controller]\nstate_dir = "{WORK}/state"\n'
        + host("ctl", "127.0.0.2", 'env = { CUDA_VISIBLE_DEVICES = "" }\n')
        + host(
            "gpu",
            "127.0.0.3",
            'env = { CUDA_VISIBLE_DEVICES = "0" }\nmemory_bandwidth_gbs = 4800\n'
            f"memory_budget_gib = {GPU_BUDGET_GIB}\n",
        )
        + host(
            "cpu",
            "127.0.0.4",
            f'env = {{ CUDA_VISIBLE_DEVICES = "" }}\nrpc_threads = {os.cpu_count()}\n'
            f"memory_bandwidth_gbs = {cpu_gbs:.0f}\n",
        )
    )
    (WORK / "hosts.toml").write_text(hosts)
    books = WORK / "playbooks"
    (books / "sweeps").mkdir(parents=True, exist_ok=True)
    (books / f"{PROFILE}.toml").write_text(
        f'model = "{MODEL}"\nrpc_hosts = ["gpu", "cpu"]\ntensor_split = "0.5/0.5"\n'
        "ctx_size = 4096\nparallel = 1\nflash_attn = \"on\"\nport = 18080\n"
        f"load_timeout_s = 600\nstall_timeout_s = {STALL}\nready_timeout_s = 120\nretries = 1\n"
        "retry_backoff_s = 2\n"
    )
    for strategy in ("grid", "adaptive"):
        (books / "sweeps" / f"{strategy}.toml").write_text(
            f'profile = "{PROFILE}"\nstrategy = "{strategy}"\n'
            f"range = {{ start = \"{SWEEP_FROM}\", stop = \"{SWEEP_TO}\", step = 0.1 }}\n"
            "include_current = false\nprune = true\n[objective]\nmetric = \"tg_tps\"\n"
            '[measure]\nshape = "random"\ntokens = 512\ngen = 64\nrepeat = 2\nwarmup = 1\n'
            "stall_timeout_s = 120\nrequest_timeout_s = 600\n"
        )


# --- core ---------------------------------------------------------------------------------


def gpu_used_mib() -> int:
    if LOCAL:
        return 0
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.split()[0])


def rss_mib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) // 1024 if match else 0


def component(host: str, name: str) -> int:
    leader = int((WORK / "run" / host / f"{name}.pid").read_text().split()[0])
    return int(Path(f"/proc/{leader}/task/{leader}/children").read_text().split()[0])


def wait_health(url: str, timeout: float = 600) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not healthy in {timeout}s")


def manual_up(split: str) -> float:
    """What a person types: both rpc-servers, then llama-server, then poll /health."""
    b = bins()
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [str(b / "ggml-rpc-server"), "-H", address, "-p", "50052", *extra],
            env={**os.environ, "CUDA_VISIBLE_DEVICES": visible},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for address, visible, extra in (
            ("127.0.0.3", "0", []),
            ("127.0.0.4", "", ["-t", str(os.cpu_count())]),
        )
    ]
    time.sleep(1.0)  # the rpc-servers listen within a second
    server = subprocess.Popen(
        [str(b / "llama-server"), "-m", str(MODEL), "--rpc", "127.0.0.3:50052,127.0.0.4:50052",
         "-ts", split, "-ngl", "99", "-c", "4096", "-np", "1", "-fa", "on", "--load-mode", "dio",
         "--no-warmup", "--host", "127.0.0.1", "--port", "18081"],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_health("http://127.0.0.1:18081")
        return time.monotonic() - started
    finally:
        for proc in (server, *procs):
            proc.send_signal(signal.SIGTERM)
        for proc in (server, *procs):
            proc.wait(timeout=60)


def llama_bench(split: str) -> dict[str, float]:
    out = subprocess.run(
        [str(bins() / "llama-bench"), "-m", str(MODEL), "--rpc", "127.0.0.3:50052,127.0.0.4:50052",
         "-ts", split, "-ngl", "99", "-fa", "1", "-p", "512", "-n", "64", "-r", "2", "-o", "json"],
        capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=580, check=False,
    )  # fmt: skip
    start, end = out.stdout.find("["), out.stdout.rfind("]")
    try:
        rows = json.loads(out.stdout[start : end + 1]) if 0 <= start < end else []
    except ValueError:
        rows = []
    found = {}
    for row in rows:
        kind = "pp" if row.get("n_prompt") else "tg"
        found[f"{kind}_tps"] = float(row["avg_ts"])
    if not found:
        say(out.stderr[-1500:])
    return found


def fit_estimates(split: str = "0.5/0.5") -> dict[str, float]:
    """health's memory fit for the split, per host, in MiB: the same functions health calls
    (the GGUF header, llama.cpp's layer assignment, KV cache, compute allowance)."""
    from cluster.config.loader import load_inventory, load_profile
    from cluster.config.models import parse_split
    from cluster.config.resolve import devices_for
    from cluster.llamacpp.gguf_info import estimate_memory, read_model_info

    inventory = load_inventory(WORK / "hosts.toml")
    profile = load_profile(WORK / "playbooks", PROFILE)
    devices = devices_for(inventory, profile, parse_split(split))
    needs = estimate_memory(
        read_model_info([MODEL]), devices, profile.ctx_size, profile.parallel, 99, "ctl"
    )
    return {host: round(need / 2**20) for host, need in needs.items()}


def core() -> None:
    figures: dict[str, Any] = {}
    split = "0.5/0.5"
    figures["fit_estimate"] = fit_estimates()
    baseline = gpu_used_mib()
    figures["manual_up_s"] = round(manual_up(split), 1)
    cli("down")
    started = time.monotonic()
    up = cli("up", PROFILE, "--json", "--skip-health")
    figures["up_s"] = round(time.monotonic() - started, 1)
    figures["up"] = json.loads(up.stdout) if up.stdout.strip().startswith("{") else up.stderr[-500:]
    figures["gpu_used_mib"] = gpu_used_mib() - baseline
    figures["cpu_rpc_rss_mib"] = rss_mib(component("cpu", "rpc-server"))
    bench = cli("bench", PROFILE, "--tokens", "512", "--gen", "64", "--repeat", "3", "--json")
    figures["bench"] = json.loads(bench.stdout) if bench.stdout.strip().startswith("{") else None
    shown = cli("show", str(figures["bench"]["run"]["id"]) if figures["bench"] else "1")
    figures["bench_table"] = shown.stdout[-3000:]
    # llama-bench on the same rpc-servers: llama-server steps aside (one client at a time).
    leader = int((WORK / "run" / "ctl" / "llama-server.pid").read_text().split()[0])
    os.killpg(leader, signal.SIGTERM)
    for _ in range(600):
        if not Path(f"/proc/{leader}").exists():
            break
        time.sleep(0.1)
    figures["llama_bench"] = llama_bench(split)
    cli("down")
    # A warm reload: the rpc-servers' tensor caches hold every weight from the load above.
    started = time.monotonic()
    cli("up", PROFILE, "--skip-health")
    figures["cached_up_s"] = round(time.monotonic() - started, 1)
    cli("down")
    figures["hang"] = hang_trial()
    save("core", figures)


def hang_trial() -> dict[str, float]:
    """SIGSTOP the GPU's rpc-server once llama-server is loading; when is it reported?"""
    for cache in (WORK / "rpc-cache").glob("*"):
        shutil.rmtree(cache, ignore_errors=True)  # a cold load: long enough to stop midway
    for old in (WORK / "run" / "ctl").glob("llama-server.log*"):
        old.unlink()  # only this load's log may say load_tensors
    up = subprocess.Popen(
        [sys.executable, "-m", "cluster", "up", PROFILE, "--skip-health"],
        env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = WORK / "run" / "ctl" / "llama-server.log"
    stopped = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and stopped is None:
        if log.exists() and "load_tensors" in log.read_text(errors="replace"):
            time.sleep(3.0)  # well into the transfer
            os.kill(component("gpu", "rpc-server"), signal.SIGSTOP)
            stopped = time.time()
        time.sleep(0.1)
    _, stderr = up.communicate(timeout=580)
    cli("down")
    import sqlite3

    db = sqlite3.connect(WORK / "state" / "clusterctl.db")
    first = db.execute(
        "SELECT finished_at, failure_class, evidence FROM attempts WHERE failure_class = 'hang' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if stopped is None or first is None:
        say(stderr[-1500:])
        return {"error": 1.0}
    latency = float(first[0]) - stopped
    return {"stall_timeout_s": STALL, "latency_s": round(latency, 2), "ratio": latency / STALL}


# --- sweeps -------------------------------------------------------------------------------


def sweep(strategy: str) -> None:
    book = WORK / "playbooks" / "sweeps" / f"{strategy}.toml"
    text = re.sub(
        r"^range = .*$",
        f'range = {{ start = "{SWEEP_FROM}", stop = "{SWEEP_TO}", step = 0.1 }}',
        book.read_text(),
        flags=re.M,
    )
    book.write_text(text)
    started = time.monotonic()
    done = cli("sweep", strategy, "--json", "--skip-health", timeout=590)
    figures: dict[str, Any] = {"wall_s": round(time.monotonic() - started, 1)}
    if done.stdout.strip().startswith("{"):
        document = json.loads(done.stdout)
        figures["sweep"] = document
        run_id = document["run"]["id"]
        report = cli("report", str(run_id), "--out", str(WORK / f"report-{strategy}"))
        figures["report_rc"] = report.returncode
        md = WORK / f"report-{strategy}" / "report.md"
        if md.exists():
            figures["report_md"] = md.read_text()[:6000]
            out = os.environ.get("OUT")
            if out:
                png = WORK / f"report-{strategy}" / "report.png"
                shutil.copy(png, Path(out) / f"{strategy}.png")
    else:
        figures["error"] = done.stderr[-3000:]
    cli("down")
    save(strategy, figures)


def main() -> int:
    sys.path.insert(0, str(REPO))
    step = sys.argv[1]
    if step == "prepare":
        prepare()
    elif step == "core":
        core()
    elif step in ("grid", "adaptive"):
        sweep(step)
    elif step == "hang":
        save("hang", {"fit_estimate_mib": fit_estimates(), "hang": hang_trial()})
    else:
        raise SystemExit(f"unknown step {step}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
