"""``clusterctl bench`` against ``llama-bench`` on the same model, split and rpc-servers.

Creates a fresh 2-host namespace testbed (evo = head, bee), always destroys it, and prints
pp512 and tg128 as both tools measure them, and their ratio (clusterctl / llama-bench;
below 1, clusterctl reports less throughput than llama-bench).

Each round brings the profile up with ``clusterctl up`` (an rpc-server on each host's link
address, llama-server on evo with ``-ts 1/1 -ngl 99 -fa auto``), then runs both tools, the
order alternating between rounds to spread the noise:

- ``clusterctl bench PROFILE --shape random --tokens 512 --gen 128 --repeat R --warmup 1``
  against that llama-server (it reuses the running one);
- ``llama-bench --rpc EVO:50052,BEE:50052 -ts 1/1 -ngl 99 -fa auto -lm dio -p 512 -n 128
  -d 0,512 -r R`` inside evo's namespace, against the same rpc-servers, once llama-server
  is stopped: an rpc-server serves one client at a time, so only llama-server goes and the
  rpc-servers stay up (when llama-bench goes first, a second ``up`` precedes ``bench``);

then ``clusterctl down``. ``-d 0,512`` adds llama-bench's tg128 at depth 512, where the
server generates (row ``tg128@d512``; llama-bench's pp512 at depth 512 is run but not
shown). A round's figure is llama-bench's ``avg_ts`` (the mean rate of its R repetitions)
and clusterctl's median of its R requests; the table shows the median of the rounds and
their range.

Why the numbers differ, with the same build, weights placement and rpc-servers:

- pp512. llama-bench times ``llama_decode`` of 512 random tokens (BOS first, one batch,
  ubatch 512, logits of the last token only) up to ``llama_synchronize``. The server's
  ``prompt_per_second`` (``server_slot_stats`` in tools/server) runs from the moment its
  slot starts on the prompt to the moment the first token is *sampled*: HTTP, JSON
  parsing, tokenization and slot assignment come before and are not counted, but building
  the batch, the prompt-cache bookkeeping and the first sampling are. The batch sizes are
  the same (-b 2048, -ub 512).
- tg128. llama-bench decodes 128 single tokens from an empty KV cache (depth 0..127),
  feeding random tokens, with no sampling. The server generates after the 512-token prompt
  (depth 512..639: attention reads a longer KV cache; compare ``tg128@d512``), samples
  every token with its sampler chain, hands each one to the HTTP thread for the SSE stream,
  and runs at ``-lv 4``; clusterctl's ``tg_tps`` counts the 127 decode steps after the
  first token ((predicted_n - 1) / predicted_ms), llama-bench 128 steps.
- Client figures (``client_pp_tps`` = prompt_n / time to first token, ``client_tg_tps`` =
  tokens after the first / the rest of the stream) add the HTTP request, SSE framing per
  token, tokenization, scheduling and the SSH tunnel clusterctl reaches the server
  through; and, before each prompt, the server saving the previous request's KV state to
  its RAM prompt cache (``--cache-ram`` default; ~25 ms a request with the slow model).
- The testbed's hosts share this machine's CPUs: while the server generates, the client,
  the tunnel and sshd compete with the rpc-servers and llama-server for them, which slows
  the server's own timings too; llama-bench runs alone. Other work on the machine (see the
  load averages printed) adds noise to both.
- Warm-up: llama-bench runs one warm-up of each test by default (a full pp512, a 1-token
  generation) before its R repetitions; ``clusterctl bench --warmup 1`` sends one full
  request first, and ``up`` itself sends one small completion.

A ``clusterctl bench`` whose result fails (seen here: a request on a kept-alive connection
that llama-server had already closed after the previous stream, ``Server disconnected
without sending a response``) is named in the output and run once more.

Usage (root): .venv/bin/python benchmarks/bench_vs_llama_bench.py [--model tiny|slow]
    [--repeat N] [--reps R] [--link-rate RATE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.builds.local import GENERATIONS, ensure_build
from cluster.config.loader import load_inventory
from cluster.orchestration import processes
from cluster.orchestration.control import LLAMA_SERVER
from cluster.testbed.bed import Testbed, TestbedSpec, create
from cluster.testbed.models import LOADABLE_SLOW, TINY, cached_model
from cluster.testbed.network import namespace_pids
from cluster.testbed.tomltext import toml_value
from cluster.transport.pool import HostPool

REPO = Path(__file__).resolve().parent.parent
PORT, RPC_PORT = 18080, 50052
N_PROMPT, N_GEN = 512, 128
SPLIT, NGL, FLASH_ATTN = "1/1", 99, "auto"
COMPONENTS = ("llama-server", "rpc-server", "ggml-rpc-server", "llama-bench")
# metric: llama-bench's (n_prompt, n_gen, n_depth), clusterctl's server and client summary
# names. The last row puts llama-bench's generation at the server's depth (-d 512), against
# the same clusterctl figures as tg128.
METRICS = {
    f"pp{N_PROMPT}": ((N_PROMPT, 0, 0), "pp_tps", "client_pp_tps"),
    f"tg{N_GEN}": ((0, N_GEN, 0), "tg_tps", "client_tg_tps"),
    f"tg{N_GEN}@d{N_PROMPT}": ((0, N_GEN, N_PROMPT), "tg_tps", "client_tg_tps"),
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Figures:
    """Per-round figures: metric -> tool ("llama-bench", "server", "client") -> values."""

    rounds: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {m: {"llama-bench": [], "server": [], "client": []}
                                 for m in METRICS})
    bench_notes: set[str] = field(default_factory=set)
    lb_info: dict[str, Any] = field(default_factory=dict)
    server_argv: list[str] = field(default_factory=list)
    log_bytes_per_request: list[float] = field(default_factory=list)
    wall: dict[str, list[float]] = field(default_factory=lambda: {"llama-bench": [],
                                                                  "clusterctl bench": []})


class Comparison:
    """The testbed, an inventory, the profile ``bench`` and the two tools run against it."""

    def __init__(self, bed: Testbed, root: Path, bins: Path, model: Path, reps: int) -> None:
        self.bed, self.root, self.bins, self.model, self.reps = bed, root, bins, model, reps
        bed.write_inventory(root / "hosts.toml", {name: str(bins) for name in bed.names})
        (root / "playbooks").mkdir()
        self.env = {**os.environ, "CLUSTERCTL_CONFIG": str(root / "hosts.toml"),
                    "CLUSTERCTL_PLAYBOOKS": str(root / "playbooks"),
                    "CLUSTERCTL_STATE_DIR": str(root / "state")}
        self.figures = Figures()
        values: dict[str, object] = {
            "model": str(model), "rpc_hosts": list(bed.names), "tensor_split": SPLIT,
            "n_gpu_layers": NGL, "flash_attn": FLASH_ATTN,
            "ctx_size": 4096, "parallel": 1, "port": PORT, "load_timeout_s": 300,
            "stall_timeout_s": 60, "ready_timeout_s": 120, "retries": 1, "retry_backoff_s": 0.5,
        }
        text = "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())
        (root / "playbooks" / "bench.toml").write_text(text)

    @property
    def head_run_dir(self) -> Path:
        return Path(self.bed.host(self.bed.head).run_dir)

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env, cwd=REPO, check=False)

    def checked(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = self.cli(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"clusterctl {' '.join(args)} exited {done.returncode}:\n"
                               f"{done.stderr[-3000:]}")
        return done

    # --- clusterctl ------------------------------------------------------------------

    def up(self) -> None:
        self.checked("up", "bench")
        if not self.figures.server_argv:
            leader = int((self.head_run_dir / f"{LLAMA_SERVER}.pid").read_text().split()[0])
            child = int(Path(f"/proc/{leader}/task/{leader}/children").read_text().split()[0])
            self.figures.server_argv = Path(f"/proc/{child}/cmdline").read_text().split("\0")[:-1]

    def run_bench(self) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
        """``clusterctl bench --json`` and its one result (None when it printed none)."""
        done = self.cli("bench", "bench", "--shape", "random", "--tokens", str(N_PROMPT),
                        "--gen", str(N_GEN), "--repeat", str(self.reps), "--warmup", "1",
                        "--json")
        try:
            (result,) = json.loads(done.stdout)["results"]
        except (ValueError, KeyError):
            return done, None
        return done, result

    def clusterctl_bench(self, round_: int) -> None:
        log = self.head_run_dir / f"{LLAMA_SERVER}.log"
        log_before = log.stat().st_size
        start = time.monotonic()
        done, result = self.run_bench()
        if done.returncode == 1 and result is not None and result["status"] == "fail":
            # A failed request is a finding, not a reason to lose the run: say it, note
            # it in the output, and measure once more.
            evidence = result.get("evidence")
            say(f"round {round_}: clusterctl bench failed ({evidence}); trying once more")
            self.figures.bench_notes.add(f"round {round_}: a bench failed and was rerun: "
                                         f"{result.get('failure_class')}: {evidence}")
            if LLAMA_SERVER not in {n for _, n in llama_processes(self.bed)}:
                self.up()
            log_before = log.stat().st_size
            start = time.monotonic()
            done, result = self.run_bench()
        if done.returncode != 0 or result is None or result["status"] != "pass":
            raise RuntimeError(f"clusterctl bench exited {done.returncode}: "
                               f"{result and result.get('evidence')}\n{done.stderr[-3000:]}")
        self.figures.wall["clusterctl bench"].append(time.monotonic() - start)
        self.figures.log_bytes_per_request.append(
            (log.stat().st_size - log_before) / (self.reps + 1))
        metrics = result["metrics"]
        if "reusing the running" not in done.stderr:
            self.figures.bench_notes.add("bench did not reuse the server that up started")
        if metrics["calibrated"] != N_PROMPT or metrics["prompt_n"] != N_PROMPT:
            self.figures.bench_notes.add(f"prompt calibrated to {metrics['calibrated']}, "
                                         f"server prompt_n {metrics['prompt_n']}")
        if metrics["cache_n_max"]:
            self.figures.bench_notes.add(f"cache_n up to {metrics['cache_n_max']}")
        if metrics["predicted_n"] != N_GEN:
            self.figures.bench_notes.add(f"predicted_n {metrics['predicted_n']}")
        summary = metrics["summary"]
        for metric, (_, server, client) in METRICS.items():
            self.figures.rounds[metric]["server"].append(summary[server]["median"])
            self.figures.rounds[metric]["client"].append(summary[client]["median"])
        for name in ("pp_tps", "client_pp_tps", "tg_tps", "client_tg_tps"):
            values = " ".join(f"{s[name]:.0f}" for s in metrics["samples"])
            say(f"round {round_}: clusterctl {name}: median {summary[name]['median']:.1f} "
                f"(cv {summary[name]['cv']:.3f}; {values})")

    def stop_llama_server(self) -> None:
        """Stop llama-server the way clusterctl does, leaving the rpc-servers running."""

        async def stop() -> processes.StopOutcome:
            inventory = load_inventory(self.root / "hosts.toml")
            head = inventory.head
            async with HostPool(inventory.hosts.values()) as pool:
                return await processes.stop(pool[head.name], head.run_dir, LLAMA_SERVER)

        outcome = asyncio.run(stop())
        if outcome.survived or outcome.word == "absent":
            raise RuntimeError(f"stopping llama-server: {outcome}")
        deadline = time.monotonic() + 15
        while "llama-server" in {name for _, name in llama_processes(self.bed)}:
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server still running after stop")
            time.sleep(0.1)

    def down(self) -> None:
        self.checked("down", timeout=120)
        deadline = time.monotonic() + 15
        while left := llama_processes(self.bed):
            if time.monotonic() > deadline:
                raise RuntimeError(f"after down, still running: {left}")
            time.sleep(0.2)

    # --- llama-bench -----------------------------------------------------------------

    def llama_bench_argv(self) -> list[str]:
        rpc = ",".join(f"{self.bed.host(n).link_address}:{RPC_PORT}" for n in self.bed.names)
        return [str(self.bins / "llama-bench"), "-m", str(self.model), "--rpc", rpc,
                "-ts", SPLIT, "-ngl", str(NGL), "-fa", FLASH_ATTN, "-lm", "dio",
                "-p", str(N_PROMPT), "-n", str(N_GEN), "-d", f"0,{N_PROMPT}",
                "-r", str(self.reps), "-o", "json"]  # fmt: skip

    def llama_bench(self, round_: int) -> None:
        start = time.monotonic()
        done = self.bed.exec(self.bed.head, self.llama_bench_argv(), capture_output=True,
                             text=True, timeout=900, check=False)
        self.figures.wall["llama-bench"].append(time.monotonic() - start)
        if done.returncode != 0:
            raise RuntimeError(f"llama-bench exited {done.returncode}:\n{done.stderr[-3000:]}")
        records = json.loads(done.stdout)
        for metric, (shape, _, _) in METRICS.items():
            (record,) = [r for r in records if (r["n_prompt"], r["n_gen"], r["n_depth"]) == shape]
            self.figures.rounds[metric]["llama-bench"].append(float(record["avg_ts"]))
            say(f"round {round_}: llama-bench {metric}: {record['avg_ts']:.1f} "
                f"(stddev {record['stddev_ts']:.1f})")
        keys = ("build_commit", "n_threads", "backends", "n_batch", "n_ubatch", "flash_attn",
                "model_size", "model_n_params", "type_k")
        self.figures.lb_info = {k: records[0].get(k) for k in keys}

    # --- rounds ----------------------------------------------------------------------

    def round(self, round_: int) -> None:
        """One round: both tools on freshly started servers, in alternating order."""
        self.up()
        if round_ % 2:
            self.clusterctl_bench(round_)
            self.stop_llama_server()
            self.llama_bench(round_)
        else:
            self.stop_llama_server()
            self.llama_bench(round_)
            self.up()
            self.clusterctl_bench(round_)
        self.down()


def proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def llama_processes(bed: Testbed) -> list[tuple[str, str]]:
    """Live llama.cpp processes (host, name) in the testbed's namespaces."""
    found = []
    for host in bed.names:
        for pid in namespace_pids(bed.host(host).namespace):
            name = proc(pid, "comm").strip()
            state = proc(pid, "stat").rsplit(")", 1)[-1].split()[:1]
            if name in COMPONENTS and state not in ([], ["Z"], ["X"]):
                found.append((host, name))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "slow"), default="tiny",
                        help="tiny (1.6 MB) or slow (308 MB); default tiny")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per tool per round: llama-bench -r, bench --repeat "
                             "(default 5)")
    parser.add_argument("--link-rate", default="1gbit", help="testbed link rate (default 1gbit)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        say("error: bench_vs_llama_bench needs root (it creates network namespaces)")
        return 2
    started, load_start = time.monotonic(), os.getloadavg()
    bins = ensure_build(GENERATIONS["current"], say=say)
    spec = TINY if args.model == "tiny" else LOADABLE_SLOW
    model = cached_model(spec)[0]
    root = Path(tempfile.mkdtemp(prefix="bench-vs-llama-bench-"))
    try:
        bed_spec = TestbedSpec(n_hosts=2, root=root / "bed", link_rate=args.link_rate)
        with create(bed_spec) as bed:
            say(f"testbed {bed.tag} up under {root}")
            c = Comparison(bed, root, bins, model, args.reps)
            try:
                for round_ in range(1, args.repeat + 1):
                    c.round(round_)
            finally:
                c.cli("down", timeout=120)
    except BaseException:
        say(f"kept {root} for inspection (the testbed itself is destroyed)")
        raise
    shutil.rmtree(root, ignore_errors=True)
    setup = {
        "model": f"{spec.name} ({model.stat().st_size / 2**20:.1f} MiB, {spec.dtype}, "
                 f"{spec.n_layer} layers, n_embd {spec.n_embd})",
        "link": f"{bed_spec.link_rate}, {bed_spec.link_delay_ms} ms delay",
        "rounds": f"{args.repeat} (order alternates; round 1 clusterctl first), "
                  f"{args.reps} repetitions per tool per round, 1 warm-up each",
        "wall": f"{time.monotonic() - started:.0f} s",
        "machine": f"{os.cpu_count()} CPUs shared by both hosts; load average (1/5/15 min) "
                   f"{' '.join(f'{x:.1f}' for x in load_start)} at start, "
                   f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at end",
    }
    report(c.figures, setup, c.llama_bench_argv())
    return 0


def report(figures: Figures, setup: dict[str, str], lb_argv: list[str]) -> None:
    print(f"clusterctl bench vs llama-bench, split {SPLIT} over 2 rpc-servers (evo, bee)")
    for key, value in setup.items():
        print(f"  {key:8} {value}")
    info = figures.lb_info
    print(f"  build    {info.get('build_commit')}, backends {info.get('backends')}, "
          f"head threads {info.get('n_threads')}, batch {info.get('n_batch')}/"
          f"{info.get('n_ubatch')}")
    print(f"  llama-bench  {' '.join(Path(a).name if a.startswith('/') else a for a in lb_argv)}")
    server = figures.server_argv
    print(f"  llama-server {' '.join(Path(a).name if a.startswith('/') else a for a in server)}")
    print(f"  clusterctl bench bench --shape random --tokens {N_PROMPT} --gen {N_GEN} "
          f"--repeat R --warmup 1 --json")
    notes = sorted(figures.bench_notes)
    if not any(note.startswith(("prompt", "cache_n", "predicted_n")) for note in notes):
        notes.insert(0, f"prompt exactly {N_PROMPT} tokens, cache_n 0, predicted_n {N_GEN}")
    print(f"  bench    {'; '.join(notes)}")
    if figures.log_bytes_per_request:
        print(f"  server log {statistics.median(figures.log_bytes_per_request) / 1024:.1f} KiB "
              f"per request (-lv 4)")
    walls = ", ".join(f"{tool} {statistics.median(w):.1f} s" for tool, w in figures.wall.items())
    print(f"  per round (median wall) {walls}")
    print("\ntokens/s: median of rounds [min-max]; ratio = clusterctl median / llama-bench median")
    header = (f"{'metric':11}{'llama-bench':>26}{'clusterctl server':>26}"
              f"{'clusterctl client':>26}{'server/lb':>11}{'client/lb':>11}")
    print(header)
    for metric, tools in figures.rounds.items():
        cells, medians = [], {}
        for tool in ("llama-bench", "server", "client"):
            values = tools[tool]
            medians[tool] = statistics.median(values)
            cells.append(f"{medians[tool]:.1f} [{min(values):.1f}-{max(values):.1f}]")
        base = medians["llama-bench"]
        print(f"{metric:11}{cells[0]:>26}{cells[1]:>26}{cells[2]:>26}"
              f"{medians['server'] / base:11.2f}{medians['client'] / base:11.2f}")


if __name__ == "__main__":
    sys.exit(main())
