"""One host's llama.cpp build, read the same way by every command: ``read_build``.

Health, ``up``, sweeps and the records all learn a host's build here, once: which binaries
its bin directory holds, what llama-server accepts (``--help``; the flag spellings differ
between generations) and says of itself (``--version``), the RPC protocol when asked for
(the rpc binary's start banner, the only place it is printed), whether ``stdbuf`` exists
(without it the banner stays in stdio's buffer) and the build's identity: the digests of
its files (``cluster.llamacpp.identity``), read through the host's container prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cluster import facts
from cluster.concurrency import together
from cluster.config.models import HostConfig
from cluster.errors import ClusterError
from cluster.llamacpp import identity
from cluster.llamacpp.capabilities import (
    BuildVersion,
    Capabilities,
    build_capabilities,
    parse_rpc_banner,
    parse_version,
    pick_rpc_binary,
)
from cluster.llamacpp.identity import BuildIdentity
from cluster.orchestration import processes
from cluster.transport.base import Transport
from cluster.transport.pool import HostPool

RPC_PROBE_PORT_OFFSET = 1000


@dataclass(frozen=True)
class HostBuild:
    """One host's llama.cpp build and tools."""

    host: str
    binaries: frozenset[str]
    identity: BuildIdentity
    line_buffer: bool  # stdbuf exists: start components line-buffered
    version: BuildVersion | None = None
    caps: Capabilities | None = None  # None when the binaries cannot serve (see problem)
    problem: str = ""
    rpc_probe_note: str = ""

    @property
    def rpc_binary(self) -> str | None:
        return pick_rpc_binary(self.binaries)

    def usable(self) -> Capabilities:
        """The capabilities ``up`` needs, or the one-line reason there are none."""
        if self.caps is None:
            raise ClusterError(f"{self.host}: {self.problem or 'no usable llama.cpp build'}")
        return self.caps

    def record(self) -> dict[str, object]:
        """What a launch records about this host's build."""
        return {**self.identity.record(), "rpc_binary": self.rpc_binary}


def tool_argv(host: HostConfig, binary: str, *args: str, line_buffered: bool = False) -> list[str]:
    """argv for a llama.cpp binary on a host: container prefix, env, stdbuf, binary, args."""
    argv = [*host.command_prefix, f"{host.llama_bin_dir}/{binary}", *args]
    return processes.component_argv(host, argv, host.env, line_buffered)


# Run the rpc binary on loopback until its banner has been printed (or 4 s passed, or it
# exited), then stop it: the banner is the only place the protocol version is printed.
PROBE_SCRIPT = r"""
out=$(mktemp) || exit 1
"$@" > "$out" 2>&1 &
pid=$!
i=0
while [ "$i" -lt 40 ] && kill -0 "$pid" 2>/dev/null; do
  grep -q 'transport' "$out" && break
  sleep 0.1; i=$((i + 1))
done
kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
cat "$out"; rm -f "$out"
"""


async def _probe_rpc_protocol(
    transport: Transport, host: HostConfig, binary: str, line_buffer: bool
) -> tuple[str | None, str]:
    """Start the rpc binary on loopback for a moment; its banner's version, or a note."""
    port = str(host.rpc_port + RPC_PROBE_PORT_OFFSET)
    probe = tool_argv(host, binary, "-H", "127.0.0.1", "-p", port, line_buffered=line_buffer)
    try:
        result = await transport.run(["sh", "-c", PROBE_SCRIPT, "clusterctl", *probe], timeout=30)
    except ClusterError as exc:
        return None, str(exc)
    try:
        return parse_rpc_banner(result.stdout).protocol_version, ""
    except ValueError:
        lines = result.stdout.strip().splitlines()
        return None, lines[-1] if lines else f"exit {result.exit_status}, no banner"


async def _capabilities(
    transport: Transport, host: HostConfig, names: frozenset[str]
) -> tuple[BuildVersion | None, Capabilities | None, str]:
    rpc_binary = pick_rpc_binary(names)
    if "llama-server" not in names:
        if rpc_binary is None:
            return None, None, f"no llama.cpp binaries in {host.llama_bin_dir}"
        return None, Capabilities(rpc_binary, (), (), None, "", None), ""
    server = [*host.command_prefix, f"{host.llama_bin_dir}/llama-server"]
    help_text, version_out = await asyncio.gather(
        transport.run([*server, "--help"]), transport.run([*server, "--version"])
    )
    version = parse_version(version_out.stdout + version_out.stderr)
    try:
        caps = build_capabilities(
            server_help=help_text.stdout + help_text.stderr,
            version_text=version_out.stdout + version_out.stderr,
            bin_names=names,
        )
    except ValueError as exc:
        return version, None, f"{host.llama_bin_dir}: {exc}"
    return version, caps, ""


async def read_build(transport: Transport, *, probe_rpc: bool = False) -> HostBuild:
    """The build in the host's ``llama_bin_dir``: binaries, capabilities and identity.

    Raises only when the host cannot be talked to; a build that cannot serve is a record
    with its ``problem``, and one that cannot be identified has an identity with a note.
    """
    host = transport.host
    listing, tools, digests = await asyncio.gather(
        transport.run([*host.command_prefix, *facts.binaries_command(host.llama_bin_dir)]),
        transport.run(["sh", "-c", "command -v stdbuf; exit 0"]),
        transport.run(identity.read_command(host.command_prefix, host.llama_bin_dir)),
    )
    names = facts.parse_binaries(listing.stdout)
    line_buffer = "stdbuf" in tools.stdout
    version, caps, problem = await _capabilities(transport, host, names)
    protocol, probe_note = None, ""
    rpc_binary = pick_rpc_binary(names)
    if probe_rpc and rpc_binary is not None:
        protocol, probe_note = await _probe_rpc_protocol(transport, host, rpc_binary, line_buffer)
    files = identity.parse_digests(digests.stdout)
    note = "" if files else _digest_note(digests.exit_status, digests.stderr, host)
    found = BuildIdentity.from_files(
        files,
        rpc_protocol=protocol,
        version=version.raw if version and version.readable else None,
        note=note,
    )
    return HostBuild(host.name, names, found, line_buffer, version, caps, problem, probe_note)


def _digest_note(exit_status: int, stderr: str, host: HostConfig) -> str:
    lines = stderr.strip().splitlines()
    if exit_status != 0 and lines:
        return lines[-1]
    return f"no llama.cpp files in {host.llama_bin_dir}"


async def detect_builds(
    pool: HostPool, hosts: Iterable[HostConfig], known: Mapping[str, HostBuild] | None = None
) -> dict[str, HostBuild]:
    """Every host's build, read concurrently, or taken from ``known`` (what the health gate
    of the same command read) where it holds the host's; a build that cannot serve is an
    error naming its host."""
    hosts = list(hosts)
    builds = dict(known or {})
    unread = [host for host in hosts if host.name not in builds]
    for build in await together(*(read_build(pool[host.name]) for host in unread)):
        builds[build.host] = build
    found = {host.name: builds[host.name] for host in hosts}
    for build in found.values():
        build.usable()
    return found
