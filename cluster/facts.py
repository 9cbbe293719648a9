"""Facts read from a host: a command to run there and a pure parser of its output.

As in pyinfra, ``command`` only builds an argv and ``parse`` only reads text, so every
parser is tested from recorded real outputs (tests/fixtures/facts/) without a host.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import NamedTuple

LLAMA_PROCESS_NAMES = ("llama-server", "rpc-server", "ggml-rpc-server")


# --- link interface ---------------------------------------------------------------------


@dataclass(frozen=True)
class LinkState:
    interface: str
    exists: bool
    up: bool
    addresses: tuple[str, ...]  # "10.0.0.1/30"


def link_command(interface: str) -> list[str]:
    return ["ip", "-j", "addr", "show", "dev", interface]


def parse_link(interface: str, exit_status: int, stdout: str) -> LinkState:
    """Parse ``ip -j addr show dev IF``; a missing interface is exists=False."""
    if exit_status != 0 or not stdout.strip():
        return LinkState(interface, False, False, ())
    entries = json.loads(stdout)
    if not entries:
        return LinkState(interface, False, False, ())
    entry = entries[0]
    flags = entry.get("flags", [])
    up = "UP" in flags and entry.get("operstate") in ("UP", "UNKNOWN")
    addresses = tuple(
        f"{info['local']}/{info['prefixlen']}"
        for info in entry.get("addr_info", [])
        if info.get("family") == "inet"
    )
    return LinkState(interface, True, up, addresses)


# --- routing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    destination: str
    device: str | None
    source: str | None
    via: str | None
    error: str | None = None


def route_command(destination: str) -> list[str]:
    return ["ip", "-j", "route", "get", destination]


def parse_route(destination: str, exit_status: int, stdout: str, stderr: str) -> Route:
    """Parse ``ip -j route get ADDR``: which interface traffic to ADDR leaves by."""
    if exit_status != 0:
        return Route(destination, None, None, None, stderr.strip() or "no route")
    entries = json.loads(stdout)
    entry = entries[0] if entries else {}
    return Route(destination, entry.get("dev"), entry.get("prefsrc"), entry.get("gateway"))


def default_route_command() -> list[str]:
    return ["ip", "-j", "route", "show", "default"]


def parse_default_routes(exit_status: int, stdout: str) -> tuple[str, ...]:
    """The interfaces that carry a default route (``ip -j route show default``)."""
    if exit_status != 0 or not stdout.strip():
        return ()
    try:
        entries = json.loads(stdout)
    except ValueError:
        return ()
    return tuple(e["dev"] for e in entries if isinstance(e, dict) and isinstance(e.get("dev"), str))


# --- round trip and throughput ------------------------------------------------------------


def ping_command(destination: str, interface: str, count: int = 3) -> list[str]:
    return [
        "ping",
        "-n",
        "-q",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        interface,
        destination,
    ]


_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def parse_ping(stdout: str) -> float | None:
    """Average round-trip time in ms from ping's summary, None when nothing came back."""
    match = _RTT.search(stdout)
    return float(match.group(2)) if match else None


def iperf_server_command(bind: str, port: int) -> list[str]:
    return ["iperf3", "-s", "-1", "-B", bind, "-p", str(port)]


def iperf_client_command(server: str, bind: str, port: int, seconds: int = 2) -> list[str]:
    return ["iperf3", "-c", server, "-B", bind, "-p", str(port), "-t", str(seconds), "-J"]


def parse_iperf(stdout: str) -> float | None:
    """Received throughput in bits per second from ``iperf3 -J``."""
    try:
        data = json.loads(stdout)
        return float(data["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError, TypeError):
        return None


# --- memory -----------------------------------------------------------------------------

MEMORY_SCRIPT = r"""
cat /proc/meminfo
for d in /sys/class/drm/card*/device; do
  for f in mem_info_vram_total mem_info_vram_used mem_info_gtt_total mem_info_gtt_used; do
    [ -r "$d/$f" ] && echo "$(basename "$(dirname "$d")") $f $(cat "$d/$f")"
  done
done
exit 0
"""


@dataclass(frozen=True)
class Memory:
    total: int
    available: int
    # card -> {"vram_total": bytes, "gtt_used": bytes, ...} from amdgpu's sysfs files
    gpus: dict[str, dict[str, int]]


def memory_command() -> list[str]:
    return ["sh", "-c", MEMORY_SCRIPT]


def parse_memory(stdout: str) -> Memory:
    values: dict[str, int] = {}
    gpus: dict[str, dict[str, int]] = {}
    for line in stdout.splitlines():
        if line.startswith("card"):
            card, key, value = line.split()
            gpus.setdefault(card, {})[key.removeprefix("mem_info_")] = int(value)
            continue
        match = re.match(r"^(\w+):\s+(\d+) kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    return Memory(values.get("MemTotal", 0), values.get("MemAvailable", 0), gpus)


# --- listening ports --------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    pids: tuple[int, ...]

    def covers(self, address: str) -> bool:
        """Would a bind to address on this port clash with this listener?"""
        wildcard = self.address in ("0.0.0.0", "*", "::", "[::]")
        return wildcard or address in ("0.0.0.0", "*") or self.address == address


# ss where it exists; else the kernel's own tables (minimal containers and images have no
# iproute2): listeners without pids, enough to see that a port is taken.
LISTENERS_SCRIPT = r"""
command -v ss >/dev/null 2>&1 && exec ss -H -t -l -n -p
echo "# /proc/net/tcp"
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
exit 0
"""


def listeners_command() -> list[str]:
    return ["sh", "-c", LISTENERS_SCRIPT]


def parse_listeners(stdout: str) -> list[Listener]:
    """Parse ``ss -Htlnp`` (one listener per line, with the pids when ss may show them) or,
    without ss, ``/proc/net/tcp`` and ``tcp6`` (listening sockets, no pids)."""
    if stdout.startswith("# /proc/net/tcp"):
        return _parse_proc_tcp(stdout)
    listeners = []
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        address = address.split("%")[0].strip("[]")
        pids = tuple(int(pid) for pid in re.findall(r"pid=(\d+)", line))
        if port.isdigit():
            listeners.append(Listener(address, int(port), pids))
    return listeners


def _parse_proc_tcp(stdout: str) -> list[Listener]:
    """Rows of /proc/net/tcp{,6} in state 0A (LISTEN): hex address (little-endian words)
    and hex port."""
    listeners = []
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A" or ":" not in fields[1]:
            continue
        hex_address, _, hex_port = fields[1].partition(":")
        try:
            raw = bytes.fromhex(hex_address)
            port = int(hex_port, 16)
        except ValueError:
            continue
        # The kernel prints each 32-bit word in host (little-endian) order.
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        try:
            address = str(ipaddress.ip_address(words))
        except ValueError:
            continue
        if address == "::":
            address = "*"
        listeners.append(Listener(address, port, ()))
    return listeners


# --- llama.cpp processes in this host's network namespace ---------------------------------

PROCESS_SCRIPT = r"""
me=$(readlink /proc/self/ns/net)
for p in /proc/[0-9]*; do
  # read, not $(cat ...): no process forked per process of the host.
  read -r comm 2>/dev/null < "$p/comm" || continue
  case "$comm" in
    llama-server|rpc-server|ggml-rpc-server)
      ns=$(readlink "$p/ns/net" 2>/dev/null)
      # The session id (field 6 of stat, after the parenthesised comm) ties a server to
      # the setsid wrapper clusterctl started, whose pid is in the run directory.
      sid=$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -d' ' -f4)
      [ -z "$ns" ] || [ "$ns" = "$me" ] && echo "${p#/proc/} $comm ${sid:-0}" ;;
  esac
done
exit 0
"""


def processes_command() -> list[str]:
    """llama.cpp servers in this host's network namespace (testbed hosts share one kernel)."""
    return ["sh", "-c", PROCESS_SCRIPT]


class ServerProcess(NamedTuple):
    pid: int
    comm: str
    session: int  # the session leader's pid: clusterctl's wrapper for what it started


def parse_processes(stdout: str) -> list[ServerProcess]:
    found = []
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit() or fields[1] not in LLAMA_PROCESS_NAMES:
            continue
        session = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
        found.append(ServerProcess(int(fields[0]), fields[1], session))
    return found


# --- binaries ---------------------------------------------------------------------------

BINARIES_SCRIPT = r"""
for b in llama-server ggml-rpc-server rpc-server llama-bench; do
  [ -x "$1/$b" ] && echo "$b"
done
exit 0
"""


def binaries_command(bin_dir: str) -> list[str]:
    return ["sh", "-c", BINARIES_SCRIPT, "clusterctl", bin_dir]


def parse_binaries(stdout: str) -> frozenset[str]:
    return frozenset(line.strip() for line in stdout.splitlines() if line.strip())


# --- files ------------------------------------------------------------------------------


def file_sizes_command(paths: list[str]) -> list[str]:
    return [
        "sh",
        "-c",
        'for f in "$@"; do stat -L -c "%s %n" -- "$f" 2>/dev/null || echo "- $f"; done',
        "clusterctl",
        *paths,
    ]


def parse_file_sizes(stdout: str) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for line in stdout.splitlines():
        size, _, path = line.partition(" ")
        sizes[path] = int(size) if size.isdigit() else None
    return sizes


def is_wildcard_or_public(address: str) -> bool:
    """True for an address rpc-server must never bind to."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return ip.is_unspecified or not (ip.is_private or ip.is_loopback)
