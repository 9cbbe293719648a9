"""Bringing a profile to serving: rpc-servers, llama-server, a load watchdog, retries.

One attempt: start an rpc-server on each of the profile's rpc hosts, bound to its link
address, and wait for its banner and port; then start llama-server on the head and watch
the load. The watchdog declares a hang when nothing moves (no new log output and no
traffic on the head's link) for the profile's stall timeout, a timeout when the whole load
takes longer than the load timeout, and a crash when a component exits; a crash is
classified from its exit status and log signatures. Ready means ``/health`` answers 200
and one small completion comes back.

After a failed attempt the log tails of every component are kept in the store, everything
is stopped (SIGTERM, then SIGKILL; a process that survives both is reported) and, unless
the failure cannot change by retrying (a version mismatch, a missing model, a taken port,
an allocation that does not fit), the next attempt starts after a backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import SecretStr

from cluster import facts
from cluster.concurrency import together
from cluster.config.models import HostConfig, Inventory, Profile, format_split
from cluster.config.resolve import Device, devices_for, serving_hosts
from cluster.errors import ClusterError, ConfigError, LaunchError
from cluster.llamacpp import commands
from cluster.llamacpp.client import LlamaClient
from cluster.llamacpp.logs import FailureClass, LoadProgress, classify
from cluster.orchestration import linkstats, processes, retry, watchdog
from cluster.orchestration.control import LLAMA_SERVER, RPC_SERVER, stop_components
from cluster.orchestration.discovery import HostBuild, detect_builds
from cluster.orchestration.failures import (
    AttemptFailed,
    banner_protocol,
    evidence,
    llama_server_failure,
    rpc_server_failure,
    signal_of,
    worker_first,
)
from cluster.records import AttemptOutcome, RunKind, RunStatus
from cluster.store import Store
from cluster.transport.base import Transport
from cluster.transport.pool import HostPool

log = structlog.get_logger(__name__)

POLL_S = 0.5
RPC_START_TIMEOUT_S = 30.0


@dataclass
class LaunchResult:
    run_id: int
    endpoint: str
    attempts: int
    load_seconds: float
    split: str
    builds: dict[str, dict[str, Any]]
    survivors: list[str] = field(default_factory=list)
    links: list[linkstats.LinkLoad] = field(default_factory=list)  # each worker's, this load


# The key reaches the head on stdin and lands in a file only its owner can read; it is
# never in an argv (``ps`` shows every argv to every user of the head).
KEY_SCRIPT = r"""
umask 077
mkdir -p -- "$(dirname -- "$1")" && cat > "$1.new" && chmod 600 -- "$1.new" \
  && mv -f -- "$1.new" "$1"
"""


async def write_key_file(transport: Transport, run_dir: str, key: SecretStr) -> str:
    """Put the API key in ``RUN_DIR/llama-server.key`` (mode 0600) on the head; its path."""
    path = f"{run_dir}/{LLAMA_SERVER}.key"
    await transport.run(
        ["sh", "-c", KEY_SCRIPT, "clusterctl", path], stdin=key.get_secret_value(), check=True
    )
    return path


def _link_counter_argv(interface: str) -> list[str]:
    base = f"/sys/class/net/{interface}/statistics"
    return ["cat", f"{base}/rx_bytes", f"{base}/tx_bytes"]


class Launcher:
    """Runs the attempts of one ``up`` and records them."""

    def __init__(
        self,
        inventory: Inventory,
        profile: Profile,
        pool: HostPool,
        store: Store,
        *,
        split: list[float] | None = None,
        environ: dict[str, str] | None = None,
        say: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.inventory = inventory
        self.profile = profile
        self.pool = pool
        self.store = store
        self.split = profile.tensor_split if split is None else split
        self.devices: list[Device] = devices_for(inventory, profile, self.split)
        self.head = inventory.head
        self.rpc_hosts = [inventory.hosts[name] for name in profile.rpc_hosts]
        self.hosts = serving_hosts(inventory, profile)
        self.api_key = profile.api_key(environ or {})
        self.say = say
        self.links: list[linkstats.LinkLoad] = []
        self.host_builds: dict[str, HostBuild] = {}
        self.builds: dict[str, dict[str, Any]] = {}

    # --- one attempt ------------------------------------------------------------------

    async def _start_rpc_server(self, host: HostConfig, meta: dict[str, Any]) -> None:
        transport = self.pool[host.name]
        build = self.host_builds[host.name]
        argv = commands.rpc_server_argv(
            host, build.usable(), cache=self.profile.rpc_cache, line_buffered=False
        )
        full = processes.component_argv(
            host, argv, commands.rpc_server_env(host), build.line_buffer
        )
        await processes.spawn(transport, host.run_dir, RPC_SERVER, full, {**meta, "argv": full})
        deadline = time.monotonic() + RPC_START_TIMEOUT_S
        progress_text = ""
        while time.monotonic() < deadline:
            poll = await processes.poll_log(transport, host.run_dir, RPC_SERVER, 0)
            progress_text = poll.new_text
            if not poll.alive:
                verdict = classify(poll.exit_status, signal_of(poll.exit_status), poll.new_text)
                raise AttemptFailed(
                    verdict.cls,
                    f"rpc-server on {host.name} exited: {evidence(verdict)}",
                    RPC_SERVER,
                )
            protocol = banner_protocol(poll.new_text)
            if protocol is not None:
                self.builds.setdefault(host.name, {})["rpc_protocol"] = protocol
            if (protocol is not None or not build.line_buffer) and await self._listening(host):
                return
            await asyncio.sleep(0.2)
        tail = progress_text.strip().splitlines()[-1:] or ["no output"]
        raise AttemptFailed(
            FailureClass.TIMEOUT,
            f"rpc-server on {host.name} did not listen on {host.rpc_endpoint} within "
            f"{RPC_START_TIMEOUT_S:.0f}s ({tail[0]})",
            RPC_SERVER,
        )

    async def _listening(self, host: HostConfig) -> bool:
        result = await self.pool[host.name].run(facts.listeners_command())
        address = str(host.link_address)
        return any(
            listener.port == host.rpc_port and listener.covers(address)
            for listener in facts.parse_listeners(result.stdout)
        )

    def _check_protocols(self) -> None:
        protocols = {
            name: b.get("rpc_protocol") for name, b in self.builds.items() if b.get("rpc_protocol")
        }
        if len(set(protocols.values())) > 1:
            listing = ", ".join(f"{name} {version}" for name, version in sorted(protocols.items()))
            raise AttemptFailed(
                FailureClass.VERSION_MISMATCH, f"RPC protocol differs: {listing}", RPC_SERVER
            )

    async def _start_llama_server(self, meta: dict[str, Any]) -> None:
        head = self.head
        build = self.host_builds[head.name]
        endpoints = [host.rpc_endpoint for host in self.rpc_hosts]
        key_file = None
        if self.api_key is not None:
            key_file = await write_key_file(self.pool[head.name], head.run_dir, self.api_key)
        try:
            argv = commands.llama_server_argv(
                self.profile,
                endpoints,
                self.split,
                build.usable(),
                head=head,
                model_path=self.profile.model,
                api_key_file=key_file,
            )
        except commands.MissingCapabilityError as exc:
            raise ConfigError(str(exc), file=f"playbooks/{self.profile.name}.toml") from None
        full = processes.component_argv(head, argv, dict(head.env), build.line_buffer)
        await processes.spawn(
            self.pool[head.name],
            head.run_dir,
            LLAMA_SERVER,
            full,
            {**meta, "argv": commands.redact(full)},
        )

    async def link_bytes(self) -> int:
        result = await self.pool[self.head.name].run(_link_counter_argv(self.head.link_interface))
        return sum(int(value) for value in result.stdout.split() if value.isdigit())

    async def progress_sample(self) -> watchdog.Sample:
        """One progress sample on the head: llama-server's log size and the bytes of its
        connections to the rpc-servers."""
        log_path = f"{self.head.run_dir}/{LLAMA_SERVER}.log"
        workers = [host.rpc_endpoint for host in self.rpc_hosts]
        argv = watchdog.sample_command(log_path, self.head.link_interface, workers)
        return watchdog.parse_sample((await self.pool[self.head.name].run(argv)).stdout)

    async def _watch_load(self, client: LlamaClient) -> float:
        """Wait until /health is 200; raise AttemptFailed on hang, timeout or crash."""
        profile = self.profile
        head = self.head
        offset = 0
        progress = LoadProgress()
        limits = watchdog.Limits(profile.stall_timeout_s, profile.load_timeout_s)
        dog: watchdog.Watchdog[float] = watchdog.Watchdog(limits, self.progress_sample)

        async def step() -> float | None:
            nonlocal offset
            transport = self.pool[head.name]
            poll = await processes.poll_log(transport, head.run_dir, LLAMA_SERVER, offset)
            if poll.new_text:
                offset += len(poll.new_text.encode())
                progress.feed(poll.new_text)
            if not poll.alive:
                dead = await llama_server_failure(self.pool, head)
                if dead is not None:
                    raise await worker_first(self.pool, self.rpc_hosts, dead)
            fatal = progress.fatal
            if fatal is not None:
                raise AttemptFailed(
                    fatal.cls, f"llama-server logged: {evidence(fatal)}", LLAMA_SERVER
                )
            await self._check_rpc_alive()
            if (await client.health()).ready:
                return dog.now() - dog.clock.start
            return None

        try:
            return await dog.watch(step, POLL_S)
        except watchdog.Expired as expired:
            if expired.kind is watchdog.Expiry.TIMEOUT:
                verdict = classify(None, None, "", timed_out=True)
                raise AttemptFailed(
                    verdict.cls, f"load took over {profile.load_timeout_s:g}s", LLAMA_SERVER
                ) from None
            stage = progress.phase.value if progress.progress_marks else "before any log output"
            verdict = classify(None, None, "", hung=True)
            raise AttemptFailed(
                verdict.cls,
                f"no load progress for {expired.seconds:.1f}s (stall timeout "
                f"{profile.stall_timeout_s:g}s), last stage: {stage}",
                LLAMA_SERVER,
            ) from None

    async def _check_rpc_alive(self) -> None:
        failure = await rpc_server_failure(self.pool, self.rpc_hosts)
        if failure is not None:
            raise failure

    async def _confirm(self, client: LlamaClient) -> None:
        try:
            answer = await client.completion("Hello", n_predict=4)
        except ClusterError as exc:
            raise AttemptFailed(FailureClass.HTTP_ERROR, str(exc), LLAMA_SERVER) from exc
        if "content" not in answer:
            raise AttemptFailed(
                FailureClass.HTTP_ERROR, "completion answer has no content", LLAMA_SERVER
            )

    async def log_tails(self) -> dict[str, str]:
        """The last lines of every component's log on the serving hosts, by host/name,
        read from every host at once."""
        wanted = [(host, name) for host in self.hosts for name in (RPC_SERVER, LLAMA_SERVER)]
        found = await together(
            *(processes.log_tail(self.pool[host.name], host.run_dir, name) for host, name in wanted)
        )
        return {
            f"{host.name}/{name}": tail
            for (host, name), tail in zip(wanted, found, strict=True)
            if tail
        }

    async def _attempt(self, run_id: int, number: int, reuse_rpc: bool = False) -> float:
        meta = {
            "profile": self.profile.name,
            "serving_key": self.serving_key,
            "split": format_split(self.split),
            "run_id": run_id,
            "attempt": number,
            "started_at": time.time(),
        }
        traffic = linkstats.LoadTraffic(self.pool, self.hosts, self.rpc_hosts, self.head.name)
        await traffic.start()
        if not reuse_rpc:
            # One rpc-server failing to start cancels the others' waits for their banners.
            await together(
                *(
                    self._start_rpc_server(host, {**meta, "port": host.rpc_port})
                    for host in self.rpc_hosts
                )
            )
        self._check_protocols()
        self.store.event(run_id, "rpc_servers_up", attempt=number, builds=self.builds)
        await self._start_llama_server(
            {**meta, "port": self.profile.port, "bind": self.profile.bind_host}
        )
        address = await self.pool[self.head.name].open_tunnel(
            self.profile.bind_host, self.profile.port
        )
        async with LlamaClient(
            f"http://{address[0]}:{address[1]}", self.api_key, self.profile.ready_timeout_s
        ) as client:
            load_seconds = await self._watch_load(client)
            self.links = await traffic.finish(load_seconds, self.store)
            self.store.event(run_id, "loaded", attempt=number, load_seconds=load_seconds)
            await self._confirm(client)
        return load_seconds

    # --- the whole launch ---------------------------------------------------------------

    async def stop_all(self) -> list[str]:
        """Stop every component on the serving hosts; describe any that survived."""
        outcomes = await stop_components(self.pool, self.hosts)
        return [f"{o.name} on {o.host} (pid {o.pid})" for o in outcomes if o.survived]

    async def read_builds(self, known: Mapping[str, HostBuild] | None = None) -> None:
        """Read every serving host's build (``discovery.read_build``), once per launch;
        a host whose build is ``known`` (the health gate just read it) is not read again."""
        self.host_builds = await detect_builds(self.pool, self.hosts, known)
        self.builds = {name: build.record() for name, build in self.host_builds.items()}

    @property
    def serving_key(self) -> str:
        """Names what this launch serves (profile values, split and every host's build
        files), so a server started from other files is never reused as this one."""
        digests = {name: b.identity.digest for name, b in sorted(self.host_builds.items())}
        text = json.dumps(
            [self.profile.model_dump(mode="json"), self.split, digests], sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def run_config(self) -> dict[str, Any]:
        """What this launch serves, as recorded with its run."""
        return {
            "profile": self.profile.model_dump(mode="json"),
            "split": format_split(self.split),
            "devices": [vars(device) for device in self.devices],
            "hosts": {h.name: h.model_dump(mode="json") for h in self.hosts},
        }

    async def _stop_for_reload(self) -> tuple[list[str], bool]:
        """Stop llama-server only, when every rpc-server still runs; else stop everything.

        Returns the survivors and whether the rpc-servers were kept."""
        if await rpc_server_failure(self.pool, self.rpc_hosts) is None:
            outcome = await processes.stop(
                self.pool[self.head.name], self.head.run_dir, LLAMA_SERVER
            )
            if not outcome.survived:
                return [], True
            return [f"{outcome.name} on {outcome.host} (pid {outcome.pid})"], False
        return await self.stop_all(), False

    async def up(
        self,
        run_id: int | None = None,
        *,
        keep_rpc: bool = False,
        builds: Mapping[str, HostBuild] | None = None,
    ) -> LaunchResult:
        """Bring the profile to serving, recording attempts in a new ``launch`` run, or in
        ``run_id`` (a bench, screen or sweep that owns the run and finishes it itself).

        ``keep_rpc`` reloads llama-server alone when every rpc-server still runs, so their
        tensor caches spare a resend of unchanged weights (a split sweep); after a failed
        attempt everything is stopped and the retries start from scratch. ``builds`` are
        hosts' builds read moments ago by the same command (its health gate): those hosts'
        are not read again."""
        profile = self.profile
        split_text = format_split(self.split)
        await self.read_builds(builds)
        owned = run_id is None
        if run_id is None:
            run_id = self.store.start_run(RunKind.LAUNCH, profile.name, self.run_config())
        first = self.store.next_attempt_number(run_id)
        if keep_rpc:
            survivors, reuse_rpc = await self._stop_for_reload()
        else:
            survivors, reuse_rpc = await self.stop_all(), False
        total = profile.retries + 1
        failures: list[str] = []
        for tried in range(1, total + 1):
            number = first + tried - 1
            attempt_id = self.store.start_attempt(run_id, number, split_text, self.builds)
            starting = (
                "llama-server (rpc-servers kept)"
                if reuse_rpc
                else f"{len(self.rpc_hosts)} rpc-server(s) and llama-server"
            )
            self.say(f"attempt {tried}/{total}: starting {starting} (split {split_text})")
            try:
                load_seconds = await self._attempt(run_id, number, reuse_rpc)
            except AttemptFailed as failure:
                tails = await self.log_tails()
                self.store.finish_attempt(
                    attempt_id,
                    AttemptOutcome.FAILED,
                    failure_class=failure.failure.value,
                    evidence=failure.evidence,
                    log_tails=tails,
                    builds=self.builds,
                )
                failures.append(f"attempt {tried}: {failure.failure.value}: {failure.evidence}")
                self.say(f"attempt {tried} failed: {failure.failure.value}: {failure.evidence}")
                survivors += await self.stop_all()
                reuse_rpc = False
                decision = retry.after_failure(
                    failure.failure, tried, total, profile.retry_backoff_s
                )
                if not decision.retry:
                    if failure.failure in retry.NOT_RETRYABLE:
                        self.say(f"not retrying: {decision.reason}")
                    break
                self.say(f"retrying in {decision.delay_s:g}s")
                await asyncio.sleep(decision.delay_s)
                continue
            except BaseException:
                self.store.finish_attempt(attempt_id, AttemptOutcome.INTERRUPTED)
                if owned:
                    self.store.finish_run(run_id, RunStatus.INTERRUPTED, {"failures": failures})
                raise
            self.store.finish_attempt(
                attempt_id,
                AttemptOutcome.READY,
                load_seconds=load_seconds,
                builds=self.builds,
                links=self.links,
            )
            for link in self.links:
                self.say(f"link {link.describe()}")
            endpoint = f"http://{profile.bind_host}:{profile.port}"
            summary = {
                "endpoint": endpoint,
                "attempts": tried,
                "load_seconds": load_seconds,
                "failures": failures,
                "survivors": survivors,
            }
            if owned:
                self.store.finish_run(run_id, RunStatus.OK, summary)
            return LaunchResult(
                run_id,
                endpoint,
                tried,
                load_seconds,
                split_text,
                self.builds,
                survivors,
                self.links,
            )
        if owned:
            self.store.finish_run(
                run_id, RunStatus.FAILED, {"failures": failures, "survivors": survivors}
            )
        survived = f"; still running after SIGKILL: {', '.join(survivors)}" if survivors else ""
        raise LaunchError(
            f"{profile.name} did not come up: {failures[-1]}{survived} (run {run_id})"
        )
