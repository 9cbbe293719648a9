"""How long ``clusterctl up`` takes, and how fast it notices a hung load, on the testbed.

Creates a fresh 2-host namespace testbed (evo = head, bee), always destroys it, and prints:

1. Seconds to serving: ``clusterctl up PROFILE`` (the real CLI in a subprocess, with the
   health gate and with ``--skip-health``) against what a person types today: OpenSSH
   (host keys checked, one connection per command) starts the rpc-servers one by one, then
   llama-server on the head with clusterctl's argv, then ``ssh evo curl .../health`` once a
   second until 200. Runs interleave (manual, gate, manual, skip, ...) to spread the noise.
   ratio = a kind's median / the manual median; above 1, clusterctl is slower. clusterctl
   also sends one small completion before it returns; the manual run stops at /health 200.
2. Hang detection: LOADABLE_SLOW over a 100 Mbit/s link; when llama-server logs
   ``load_tensors``, bee's rpc-server is SIGSTOPped. latency = attempt 1's ``finished_at``
   (store) - SIGSTOP time; overshoot = latency - stall timeout; lat/stall near 1 is on time.

Manual runs stop by pid (``ssh HOST kill PID``), not ``pkill NAME``: the namespaces share
one pid space, so pkill would hit every llama.cpp process on the machine. Between runs no
llama.cpp process may survive in the testbed and ports 18080/50052 must be free.

Usage (root): .venv/bin/python benchmarks/up_benchmark.py [--repeat N] [--model tiny|slow]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.store import Store
from cluster.testbed.bed import Testbed, TestbedSpec, create
from cluster.testbed.models import LOADABLE_SLOW, TINY, cached_model
from cluster.testbed.network import namespace_pids
from cluster.testbed.tomltext import toml_value

REPO = Path(__file__).resolve().parent.parent
PORT, RPC_PORT = 18080, 50052
LOAD_NEEDLE = "load_tensors: loading model tensors"
COMPONENTS = ("llama-server", "rpc-server", "ggml-rpc-server")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """The testbed plus an inventory, a profile directory and the two ways to bring it up."""

    def __init__(self, bed: Testbed, root: Path, bins: Path, model: Path) -> None:
        self.bed, self.root, self.bins, self.model = bed, root, bins, model
        bed.write_inventory(root / "hosts.toml", {name: str(bins) for name in bed.names})
        (root / "playbooks").mkdir()
        self.env = {**os.environ, "CLUSTERCTL_CONFIG": str(root / "hosts.toml"),
                    "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
                    "CLUSTERCTL_STATE_DIR": str(root / "state")}
        self.manual_pids: dict[str, list[int]] = {}
        self.ssh_seconds: list[float] = []
        self.polls = 0
        self.phases: list[tuple[float, float, float]] = []  # before run, run, after (skip)
        self.health_cmd = "curl -s -o /dev/null -w %{http_code} " + f"http://127.0.0.1:{PORT}/health"
        if self.ssh(bed.head, "command -v curl").returncode != 0:
            code = ("import urllib.request as u\ntry: print(u.urlopen('http://127.0.0.1:"
                    f"{PORT}/health', timeout=2).status)\nexcept Exception: print(0)")
            self.health_cmd = shlex.join(["python3", "-c", code])

    def write_profile(self, name: str, model: Path, **keys: object) -> None:
        values: dict[str, object] = {
            "model": str(model), "rpc_hosts": list(self.bed.names), "tensor_split": "1/1",
            "ctx_size": 2048, "parallel": 2, "port": PORT, "load_timeout_s": 120,
            "stall_timeout_s": 5, "ready_timeout_s": 60, "retries": 2, "retry_backoff_s": 0.5,
            **keys,
        }
        text = "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())
        (self.root / "playbooks" / f"{name}.toml").write_text(text)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env, cwd=REPO, check=False)

    def ssh(self, host: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        done = subprocess.run(self.bed.ssh_argv(host, [command]), capture_output=True,
                              text=True, timeout=timeout, check=False)
        self.ssh_seconds.append(time.monotonic() - start)
        return done

    def run_dir(self, host: str) -> Path:
        return Path(self.bed.host(host).run_dir)

    # --- the manual sequence ---------------------------------------------------------

    def rpc_argv(self, host: str) -> list[str]:
        address = str(self.bed.host(host).link_address)
        return [str(self.bins / "ggml-rpc-server"), "-H", address, "-p", str(RPC_PORT), "-c"]

    def server_argv(self) -> list[str]:
        rpc = ",".join(f"{self.bed.host(n).link_address}:{RPC_PORT}" for n in self.bed.names)
        return [str(self.bins / "llama-server"), "-m", str(self.model), "--rpc", rpc,
                "-ts", "1/1", "-ngl", "99", "-c", "2048", "-np", "2", "-fa", "auto",
                "--load-mode", "dio", "--no-warmup", "--host", "127.0.0.1", "--port", str(PORT),
                "-lv", "4"]  # fmt: skip

    def detach(self, host: str, argv: list[str], env: dict[str, str], log: str) -> int:
        """Start argv detached on host; $! is the binary itself (setsid/nohup exec it)."""
        assigns = [f"{key}={value}" for key, value in env.items()]
        command = (f"cd {shlex.quote(str(self.run_dir(host)))} || exit 1; "
                   f"{shlex.join(['env', *assigns, 'setsid', 'nohup', *argv])} "
                   f"> {log} 2>&1 < /dev/null & echo $!")
        done = self.ssh(host, command)
        if done.returncode != 0 or not done.stdout.strip().isdigit():
            raise RuntimeError(f"{host}: could not start {argv[0]}: {done.stderr.strip()}")
        self.manual_pids.setdefault(host, []).append(int(done.stdout))
        return int(done.stdout)

    def manual_up(self) -> float:
        start, self.polls = time.monotonic(), 0
        for host in self.bed.names:
            cache = {"LLAMA_CACHE": str(self.bed.host(host).rpc_cache_dir)}
            self.detach(host, self.rpc_argv(host), cache, "manual-rpc-server.log")
        head = self.bed.head
        server = self.detach(head, self.server_argv(), {}, "manual-llama-server.log")
        while self.ssh(head, self.health_cmd).stdout.strip() != "200":
            self.polls += 1
            if not alive(server) or time.monotonic() - start > 120:
                tail = (self.run_dir(head) / "manual-llama-server.log").read_text()[-800:]
                raise RuntimeError(f"manual llama-server did not come up:\n{tail}")
            time.sleep(1)
        return time.monotonic() - start

    def manual_down(self) -> None:
        for sig in ("TERM", "KILL"):
            for host, pids in self.manual_pids.items():
                if any(map(alive, pids)):
                    self.ssh(host, f"kill -{sig} {' '.join(map(str, pids))} 2>/dev/null")
            deadline = time.monotonic() + 10
            every = [pid for pids in self.manual_pids.values() for pid in pids]
            while time.monotonic() < deadline and any(map(alive, every)):
                time.sleep(0.1)
        self.manual_pids.clear()
        self.assert_idle()

    # --- clusterctl ------------------------------------------------------------------

    def clusterctl_up(self, *flags: str, profile: str = "bench") -> float:
        start, wall = time.monotonic(), time.time()
        done = self.cli("up", profile, *flags)
        elapsed, end = time.monotonic() - start, time.time()
        if done.returncode != 0:
            raise RuntimeError(f"clusterctl up {profile} {' '.join(flags)}: {done.stderr}")
        with Store(self.root / "state") as store:
            run = store.runs("launch")[0]
        if run.summary.get("attempts") != 1:
            say(f"note: that up needed {run.summary.get('attempts')} attempts")
        if flags == ("--skip-health",) and run.finished_at is not None:
            finished = run.finished_at
            self.phases.append((run.started_at - wall, finished - run.started_at, end - finished))
        return elapsed

    def down(self) -> None:
        done = self.cli("down", timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"clusterctl down: {done.stderr}")
        self.assert_idle()

    def component_pid(self, host: str, component: str) -> int:
        leader = int((self.run_dir(host) / f"{component}.pid").read_text().split()[0])
        return int(Path(f"/proc/{leader}/task/{leader}/children").read_text().split()[0])

    def assert_idle(self) -> None:
        """No llama.cpp process in our namespaces and both ports free on every host."""
        query = f"ss -Hltn '( sport = :{PORT} or sport = :{RPC_PORT} )'"
        deadline = time.monotonic() + 15
        while True:
            left = llama_processes(self.bed)
            ports = {h: self.ssh(h, query).stdout.strip() for h in self.bed.names}
            if not left and not any(ports.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not idle: processes {left}, listeners {ports}")
            time.sleep(0.5)


def proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    return proc(pid, "cmdline").split("\0")[:-1]


def alive(pid: int) -> bool:
    state = proc(pid, "stat").rsplit(")", 1)[-1].split()[:1]
    return state not in ([], ["Z"], ["X"])


def llama_processes(bed: Testbed) -> list[str]:
    """Live llama.cpp processes in the testbed's namespaces."""
    return [f"{name}:{pid}" for name in bed.names
            for pid in namespace_pids(bed.host(name).namespace)
            if proc(pid, "comm").strip() in COMPONENTS and alive(pid)]


def bench_up(b: Bench, repeat: int) -> dict[str, list[float]]:
    """Part 1: warm up (and check the manual argv is clusterctl's), then interleaved runs."""
    b.write_profile("bench", b.model)
    b.clusterctl_up("--skip-health")
    argv = {h: b.rpc_argv(h) for h in b.bed.names}
    same = cmdline(b.component_pid(b.bed.head, "llama-server")) == b.server_argv() and all(
        cmdline(b.component_pid(h, "rpc-server")) == argv[h] for h in b.bed.names)
    say(f"warm-up: manual argv {'==' if same else '!='} clusterctl's (llama-server, rpc-servers)")
    b.down()
    b.manual_up()
    b.manual_down()
    times: dict[str, list[float]] = {"manual": [], "gate": [], "skip": [], "polls": []}
    b.ssh_seconds.clear()
    b.phases.clear()
    for round_ in range(1, repeat + 1):
        for kind in ("manual", "gate", "manual", "skip"):
            if kind == "manual":
                seconds = b.manual_up()
                times["polls"].append(b.polls + 1)
                b.manual_down()
            else:
                seconds = b.clusterctl_up(*(["--skip-health"] if kind == "skip" else []))
                b.down()
            times[kind].append(seconds)
            say(f"round {round_}: {kind:6} {seconds:6.2f}s")
    return times


def hang_trial(b: Bench, stall: float) -> tuple[float, float, float]:
    """Part 2, one trial: stall, latency (store) and the quiet time the watchdog measured."""
    b.write_profile("slow", cached_model(LOADABLE_SLOW)[0], stall_timeout_s=stall)
    for host in b.bed.names:  # cold rpc caches and no old log holding the needle
        shutil.rmtree(b.bed.host(host).rpc_cache_dir, ignore_errors=True)
        b.bed.host(host).rpc_cache_dir.mkdir()
        for old in b.run_dir(host).glob("*.log*"):
            old.unlink()
    argv = [sys.executable, "-m", "cluster", "up", "slow", "--skip-health"]
    pipe = subprocess.PIPE
    up = subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, env=b.env, cwd=REPO)
    try:
        log = b.run_dir(b.bed.head) / "llama-server.log"
        deadline = time.monotonic() + 90
        while not (log.exists() and LOAD_NEEDLE in log.read_text(errors="replace")):
            if time.monotonic() > deadline or up.poll() is not None:
                raise RuntimeError(f"{LOAD_NEEDLE!r} never appeared in {log}")
            time.sleep(0.05)
        os.kill(b.component_pid("bee", "rpc-server"), signal.SIGSTOP)
        injected = time.time()
        _, stderr = up.communicate(timeout=300)
    finally:
        if up.poll() is None:
            up.kill()
    if up.returncode != 0:
        raise RuntimeError(f"clusterctl up slow failed:\n{stderr}")
    with Store(b.root / "state") as store:
        first, *rest = store.attempts(store.runs("launch")[0].id)
    if first.failure_class != "hang" or first.finished_at is None or not rest:
        raise RuntimeError(f"attempt 1 was {first.failure_class}: {first.evidence}")
    quiet = re.search(r"no load progress for ([0-9.]+)s", first.evidence or "")
    b.down()
    latency = first.finished_at - injected
    say(f"stall {stall:g}s: hang detected {latency:.2f}s after SIGSTOP")
    return stall, latency, float(quiet.group(1)) if quiet else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of part 1 (default 3)")
    parser.add_argument("--model", choices=("tiny", "slow"), default="tiny",
                        help="model of part 1 (part 2 always uses slow)")
    parser.add_argument("--hang-repeat", type=int, default=2, help="trials per stall timeout")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: up_benchmark needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    bins = ensure_build(GENERATIONS["current"], say=say)
    model = cached_model(TINY if args.model == "tiny" else LOADABLE_SLOW)[0]
    root = Path(tempfile.mkdtemp(prefix="up-bench-"))
    try:
        with create(TestbedSpec(n_hosts=2, root=root / "bed", link_rate="1gbit")) as bed:
            say(f"testbed {bed.tag} up under {root}")
            b = Bench(bed, root, bins, model)
            try:
                start = time.monotonic()
                b.cli("--help")
                cli_start = time.monotonic() - start
                times = bench_up(b, args.repeat)
                ssh_each = statistics.median(b.ssh_seconds)
                bed.set_link_rate("100mbit")
                hangs = [hang_trial(b, s) for s in (5.0, 10.0) for _ in range(args.hang_repeat)]
            finally:
                b.cli("down", timeout=120)
                b.manual_down()
    except BaseException:
        say(f"kept {root} for inspection (the testbed itself is destroyed)")
        raise
    shutil.rmtree(root, ignore_errors=True)
    report(args.model, times, b.phases, cli_start, ssh_each, hangs)
    return 0


def report(model: str, times: dict[str, list[float]], phases: list[tuple[float, float, float]],
           cli_start: float, ssh_each: float, hangs: list[tuple[float, float, float]]) -> None:
    manual = statistics.median(times["manual"])
    print(f"\n1. seconds to serving, model {model}, interleaved; {len(times['manual'])} manual "
          f"runs, {len(times['gate'])} of each clusterctl kind; ratio = median / manual median")
    print(f"{'':30}{'median':>8}{'min':>8}{'max':>8}{'ratio':>8}")
    ratios: list[tuple[str, float]] = []
    for kind, label in (("manual", "manual (OpenSSH, 1 s poll)"), ("gate", "clusterctl up"),
                        ("skip", "clusterctl up --skip-health")):
        median = statistics.median(times[kind])
        ratios.append((f"{label} / manual", median / manual))
        print(f"{label:30}{median:8.2f}{min(times[kind]):8.2f}{max(times[kind]):8.2f}"
              f"{median / manual:8.2f}")
    gate = statistics.median(times["gate"]) - statistics.median(times["skip"])
    before, during, after = (statistics.median(p) for p in zip(*phases, strict=True))
    print(f"why: manual = one OpenSSH handshake per command ({ssh_each:.2f}s each; 3 starts + "
          f"{statistics.median(times['polls']):g} health poll(s)), and its 1 s poll can answer up "
          f"to 1 s late. --skip-health = {before:.2f}s before its run starts (Python start "
          f"{cli_start:.2f}s, asyncssh connect, build detection) + {during:.2f}s run (0.2/0.5 s "
          f"watchdog polls over one reused connection, plus a confirming completion) + "
          f"{after:.2f}s exit. The health gate adds {gate:.2f}s.")
    print("\n2. hang detection after SIGSTOP of bee's rpc-server (LOADABLE_SLOW, 100 Mbit/s); "
          "quiet = no-progress time the watchdog measured when it fired")
    print(f"{'stall':>6}{'latency':>9}{'lat/stall':>10}{'overshoot':>10}{'quiet':>8}")
    for stall, latency, quiet in hangs:
        ratios.append((f"hang latency / stall {stall:g}s", latency / stall))
        print(f"{stall:6g}{latency:9.2f}{latency / stall:10.2f}{latency - stall:+10.2f}"
              f"{quiet:8.1f}")
    print("\nratios")
    for label, ratio in ratios[1:]:
        print(f"  {label:38}{ratio:6.2f}")


if __name__ == "__main__":
    sys.exit(main())
