"""What each serving host's llama.cpp build can do, asked of the host itself.

The head runs ``llama-server --help`` and ``--version`` (the flag spellings differ between
generations); every host lists its bin directory for the RPC server binary's name and
says whether it has ``stdbuf`` (without it the rpc-server banner stays in stdio's buffer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from cluster import facts
from cluster.config.models import HostConfig
from cluster.errors import ClusterError
from cluster.llamacpp.capabilities import Capabilities, build_capabilities, pick_rpc_binary
from cluster.transport.pool import HostPool


@dataclass(frozen=True)
class HostBuild:
    """One host's llama.cpp build and tools, as ``up`` needs them."""

    host: str
    caps: Capabilities
    line_buffer: bool  # stdbuf exists: start components line-buffered


async def _detect(pool: HostPool, host: HostConfig) -> HostBuild:
    transport = pool[host.name]
    listing = await transport.run(
        [*host.command_prefix, *facts.binaries_command(host.llama_bin_dir)]
    )
    names = facts.parse_binaries(listing.stdout)
    tools = await transport.run(["sh", "-c", "command -v stdbuf; exit 0"])
    line_buffer = "stdbuf" in tools.stdout
    rpc_binary = pick_rpc_binary(names)
    if "llama-server" not in names:
        if rpc_binary is None:
            raise ClusterError(f"{host.name}: no llama.cpp binaries in {host.llama_bin_dir}")
        caps = Capabilities(rpc_binary, (), (), None, "", None)
        return HostBuild(host.name, caps, line_buffer)
    server = [*host.command_prefix, f"{host.llama_bin_dir}/llama-server"]
    help_text, version = await asyncio.gather(
        transport.run([*server, "--help"]), transport.run([*server, "--version"])
    )
    try:
        caps = build_capabilities(
            server_help=help_text.stdout + help_text.stderr,
            version_text=version.stdout + version.stderr,
            bin_names=names,
        )
    except ValueError as exc:
        raise ClusterError(f"{host.name}: {host.llama_bin_dir}: {exc}") from None
    return HostBuild(host.name, caps, line_buffer)


async def detect_builds(pool: HostPool, hosts: Iterable[HostConfig]) -> dict[str, HostBuild]:
    """Every host's build, detected concurrently; the first error names its host."""
    hosts = list(hosts)
    found = await asyncio.gather(*(_detect(pool, host) for host in hosts))
    return {build.host: build for build in found}
