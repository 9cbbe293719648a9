"""What one llama.cpp build can do, read from its own outputs.

Real clusters run more than one generation of llama.cpp (toolbox containers pin older
builds), and the generations spell things differently: the RPC server binary is
``ggml-rpc-server`` in current builds and ``rpc-server`` in legacy ones, direct I/O is
``--load-mode dio`` in current builds and ``--direct-io`` in legacy ones. So nothing here
hard-codes a spelling: the controller runs ``llama-server --help``, ``llama-server
--version``, lists the bin directory and reads the rpc-server start banner, and these
pure functions turn those texts into a ``Capabilities`` record. ``commands.py`` builds
argv lists from that record.

Every parser is tested from outputs captured from the two real builds
(``tests/fixtures/llamacpp/``).

RPC protocol compatibility (ggml/src/ggml-rpc/ggml-rpc.cpp, ``negotiate_hello`` in current
builds, ``check_server_version`` in legacy ones): the client (llama-server) refuses a server
whose major version differs from its own, or whose minor version is greater than its own:

    if (response.major != RPC_PROTO_MAJOR_VERSION || response.minor > RPC_PROTO_MINOR_VERSION)
        -> "RPC server version mismatch: X.Y.Z", then "RPC handshake failed for HOST:PORT"

The patch number is not compared. A newer client major also fails on the server side
before any version is exchanged ("HELLO request size mismatch ... client needs upgrade").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

RpcBinary = Literal["ggml-rpc-server", "rpc-server"]
# Preference order: a bin directory holding both (an upgraded tree) runs the current name.
RPC_BINARIES: tuple[RpcBinary, ...] = ("ggml-rpc-server", "rpc-server")

FlashAttnStyle = Literal["value", "switch", "none"]


@dataclass(frozen=True)
class BuildVersion:
    """``llama-server --version``, read for people, never to identify a build.

    The same sources print ``build 1, commit 0c1e570``, ``build 0, commit unknown`` or
    ``build 0, commit 0c1e570`` depending on how they were unpacked (LLAMACPP.md), so a
    build is identified by its file digests (``identity.py``); this is what it says of
    itself. ``readable`` is False when no version line was found (``raw`` then holds the
    first line of the text, for the warning).
    """

    commit: str | None
    build_number: int | None
    raw: str
    release: str | None = None  # "0.5.0-dev" in current builds; absent in legacy ones
    readable: bool = True


@dataclass(frozen=True)
class RpcDevice:
    """One device line of an rpc-server banner: ``CPU: Intel(R) Xeon(R) (24152 MiB, ... free)``."""

    name: str
    description: str
    total_mib: int | None
    free_mib: int | None


@dataclass(frozen=True)
class RpcBanner:
    """The start banner of ``ggml-rpc-server`` / ``rpc-server`` (printed on stdout)."""

    protocol_version: str
    endpoint: str | None
    devices: list[RpcDevice]
    cache_dir: str | None  # None when the banner says "n/a" (started without -c)
    transport: str | None = None  # "TCP" or "TCP (RDMA auto-negotiate enabled)"


@dataclass(frozen=True)
class Capabilities:
    """Everything the command builders need to know about one host's build."""

    rpc_binary: RpcBinary
    direct_io_args: tuple[str, ...]
    verbose_args: tuple[str, ...]
    commit: str | None
    version_text: str
    rpc_protocol: str | None
    server_flags: frozenset[str] = field(default_factory=frozenset)
    flash_attn: FlashAttnStyle = "value"


_TIMESTAMP = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} [A-Z] ")

# "version: 0.5.0-dev (build 1, commit 0c1e570)", "(build 0, commit unknown)"
_VERSION_CURRENT = re.compile(
    r"^version:\s*(?P<release>\S+)\s*\(build\s+(?P<build>\d+),\s*commit\s+(?P<commit>\w+)\)"
)
# "version: 1 (e3a74b2)", "version: 0 (unknown)", upstream's "version: 6690 (4d1a2e3f)"
_VERSION_LEGACY = re.compile(r"^version:\s*(?P<build>\d+)\s*\((?P<commit>\w+)\)")
# Anything else on a "version:" line is kept as it is.
_VERSION_ANY = re.compile(r"^version:\s*(?P<rest>.+)$")
_COMMIT = re.compile(r"^[0-9a-fA-F]{4,40}$")


def _commit(text: str) -> str | None:
    return text.lower() if _COMMIT.match(text) else None


def parse_version(text: str) -> BuildVersion:
    """Parse ``llama-server --version`` of any generation; never raises.

    Lines before or after the version line (loader noise, ``built with ...``) are skipped.
    A ``version:`` line of an unknown shape is kept raw; text with no ``version:`` line at
    all gives ``readable=False`` and the caller warns.
    """
    for raw_line in text.splitlines():
        line = _TIMESTAMP.sub("", raw_line.strip())
        match = _VERSION_CURRENT.match(line)
        if match:
            return BuildVersion(
                commit=_commit(match["commit"]),
                build_number=int(match["build"]),
                raw=line,
                release=match["release"],
            )
        match = _VERSION_LEGACY.match(line)
        if match:
            return BuildVersion(
                commit=_commit(match["commit"]), build_number=int(match["build"]), raw=line
            )
        if _VERSION_ANY.match(line):
            return BuildVersion(commit=None, build_number=None, raw=line)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return BuildVersion(commit=None, build_number=None, raw=first[:200], readable=False)


_FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# Option lines start at column 0 (llama-server) or 2 (rpc-server); description
# continuation lines are indented by 30 columns or more.
_MAX_OPTION_INDENT = 8


def _option_head(line: str) -> str | None:
    """The flag part of a help line ("-c,    --ctx-size N"), without its description."""
    stripped = line.lstrip()
    if not stripped.startswith("-") or len(line) - len(stripped) > _MAX_OPTION_INDENT:
        return None
    # Columns are separated by runs of 2+ spaces; a segment ending in "," continues the
    # flag list ("-c," + "--ctx-size N"), any other segment ends it.
    head: list[str] = []
    for segment in re.split(r"\s{2,}", stripped):
        head.append(segment)
        if not segment.endswith(","):
            break
    return " ".join(head)


def parse_server_help(text: str) -> frozenset[str]:
    """Every flag spelling a ``--help`` text lists (llama-server and the rpc servers).

    ``-c,    --ctx-size N   size of...`` gives ``-c`` and ``--ctx-size``; negations
    listed beside a flag (``--mmap, --no-mmap``) are flags too. Descriptions and
    section headers (``----- common params -----``) are not.
    """
    flags: set[str] = set()
    for line in text.splitlines():
        head = _option_head(line)
        if head is None:
            continue
        for token in re.split(r"[\s,]+", head):
            if _FLAG.match(token):
                flags.add(token)
    return frozenset(flags)


def help_option_line(text: str, flag: str) -> str | None:
    """The head of the help line that lists ``flag`` (to read its argument spelling)."""
    for line in text.splitlines():
        head = _option_head(line)
        if head is not None and flag in re.split(r"[\s,]+", head):
            return head
    return None


def flash_attn_style(help_text: str) -> FlashAttnStyle:
    """How this build takes flash attention: ``-fa on|off|auto`` or a bare ``-fa`` switch.

    Both builds of this project take a value (``-fa, --flash-attn [on|off|auto]``);
    llama.cpp before mid-2025 had a bare switch, which this still recognises.
    """
    head = help_option_line(help_text, "--flash-attn")
    if head is None:
        return "none"
    return "value" if re.search(r"on\|off", head) else "switch"


def direct_io_args_from_help(flags: frozenset[str]) -> tuple[str, ...]:
    """The arguments that make this build read the model with direct I/O.

    Current builds: ``--load-mode dio`` (``-lm``); legacy builds: ``-dio``
    (``--direct-io``), the spelling users of those builds know. Direct I/O avoids the
    mmap load hang over RPC (llama.cpp #19745). Empty when the build has neither.
    """
    if "--load-mode" in flags:
        return ("--load-mode", "dio")
    if "-dio" in flags:
        return ("-dio",)
    if "--direct-io" in flags:
        return ("--direct-io",)
    return ()


def verbose_args_from_help(flags: frozenset[str]) -> tuple[str, ...]:
    """Arguments that make llama-server print load progress (``load_tensors`` lines).

    llama.cpp's library logs at INFO map to verbosity 4 (trace) in the common logger, so
    the default threshold (3) hides ``load_tensors``, buffer sizes and the KV cache;
    ``-lv 4`` shows them. ``--verbose`` shows them too but adds every debug line (five
    times the text), so it is only the fallback.
    """
    if "-lv" in flags:
        return ("-lv", "4")
    if "--verbosity" in flags:
        return ("--verbosity", "4")
    if "--verbose" in flags:
        return ("--verbose",)
    return ()


_BANNER_START = re.compile(r"Starting RPC server v(?P<version>\d+\.\d+\.\d+)")
_BANNER_FIELD = re.compile(r"^\s+(?P<key>endpoint|local cache|transport)\s*:\s*(?P<value>.*?)\s*$")
_BANNER_DEVICE = re.compile(
    r"^\s+(?P<name>[A-Za-z0-9_-]+):\s(?P<description>.*?)"
    r"(?:\s\((?P<total>\d+) MiB, (?P<free>\d+) MiB free\))?\s*$"
)


def parse_rpc_banner(text: str) -> RpcBanner:
    """Parse the start banner of either rpc server generation.

    The banner is printed with ``printf`` on stdout: when stdout is a file or a pipe it is
    block-buffered and only appears when 4 KiB accumulate or the process exits, so start
    the server line-buffered (``stdbuf -oL``, see ``commands.rpc_server_argv``).
    Lines before ``Starting RPC server`` (the non-loopback warning, loader noise) and after
    the device list are ignored. Raises ValueError when there is no banner.
    """
    lines = text.splitlines()
    start = None
    version = ""
    for index, line in enumerate(lines):
        match = _BANNER_START.search(line)
        if match:
            start, version = index, match["version"]
            break
    if start is None:
        raise ValueError("no 'Starting RPC server vX.Y.Z' line in the rpc-server output")
    fields: dict[str, str] = {}
    devices: list[RpcDevice] = []
    in_devices = False
    for line in lines[start + 1 :]:
        field_match = _BANNER_FIELD.match(line)
        if field_match:
            fields[field_match["key"]] = field_match["value"]
            in_devices = False
            continue
        if line.strip() == "Devices:":
            in_devices = True
            continue
        device_match = _BANNER_DEVICE.match(line) if in_devices else None
        if device_match:
            total, free = device_match["total"], device_match["free"]
            devices.append(
                RpcDevice(
                    name=device_match["name"],
                    description=device_match["description"],
                    total_mib=int(total) if total else None,
                    free_mib=int(free) if free else None,
                )
            )
            continue
        if line.startswith(" "):
            continue
        break  # first unindented line after the banner: server activity, errors
    cache = fields.get("local cache")
    return RpcBanner(
        protocol_version=version,
        endpoint=fields.get("endpoint"),
        devices=devices,
        cache_dir=None if cache in (None, "n/a") else cache,
        transport=fields.get("transport"),
    )


def _version_tuple(version: str) -> tuple[int, int, int]:
    parts = version.strip().lstrip("v").split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{version!r} is not an RPC protocol version such as 7.0.0")
    return int(parts[0]), int(parts[1]), int(parts[2])


def rpc_protocols_compatible(client: str, server: str) -> bool:
    """Whether a llama-server speaking ``client`` accepts an rpc-server speaking ``server``.

    ggml-rpc's rule: same major, and the server's minor not newer than the client's; the
    patch number is ignored. 7.0.0 client with a 4.0.1 server: refused.
    """
    client_major, client_minor, _ = _version_tuple(client)
    server_major, server_minor, _ = _version_tuple(server)
    return server_major == client_major and server_minor <= client_minor


def pick_rpc_binary(existing_names: Iterable[str]) -> RpcBinary | None:
    """Which RPC server binary a bin directory holds (current name first), or None."""
    names = set(existing_names)
    for binary in RPC_BINARIES:
        if binary in names:
            return binary
    return None


def build_capabilities(
    *,
    server_help: str,
    version_text: str,
    bin_names: Iterable[str],
    rpc_banner: str | None = None,
) -> Capabilities:
    """Assemble a host's capabilities from its help text, version text and bin listing.

    ``rpc_banner`` is the rpc server's start banner when one is available (the protocol
    version is only printed there). Raises ValueError when the bin directory has no RPC
    server binary or the texts are not llama.cpp's.
    """
    rpc_binary = pick_rpc_binary(bin_names)
    if rpc_binary is None:
        raise ValueError(f"no RPC server binary ({' or '.join(RPC_BINARIES)}) in the bin directory")
    flags = parse_server_help(server_help)
    if "--rpc" not in flags:
        raise ValueError("this llama-server was built without RPC support (no --rpc in --help)")
    version = parse_version(version_text)
    return Capabilities(
        rpc_binary=rpc_binary,
        direct_io_args=direct_io_args_from_help(flags),
        verbose_args=verbose_args_from_help(flags),
        commit=version.commit,
        version_text=version.raw,
        rpc_protocol=parse_rpc_banner(rpc_banner).protocol_version if rpc_banner else None,
        server_flags=flags,
        flash_attn=flash_attn_style(server_help),
    )
