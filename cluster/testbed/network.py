"""The testbed's network: one Linux network namespace per host, two networks between them.

Every name carries the testbed's tag, so two testbeds (parallel test runs, or a stale one
left by a killed run) never collide, and cleanup can find exactly what is ours::

    root namespace (the controller)            namespace ctl-{tag}-link
    bridge ctl{tag}m 10.231.X.1/24              bridge br0 (no address)
      |-- ctl{tag}m0 ==veth== mgmt0 [ctl-{tag}-evo] usb0 ==veth== p0-evo --|
      |-- ctl{tag}m1 ==veth== mgmt0 [ctl-{tag}-bee] usb0 ==veth== p1-bee --|

The management network (``mgmt0``, 10.231.X.0/24) is how the controller reaches each
host's sshd. The direct link (``usb0``, 10.232.X.0/24) stands in for the USB4 cable: its
bridge lives in a namespace of its own, so the root namespace is not on it, exactly as the
controller is not on the real cable. ``usb0`` egress is shaped with tc (htb for the rate,
netem for the delay where the kernel has it). X is derived from the tag.

Commands are argv lists built here and run through :func:`run_checked`, which turns a
failure into a :class:`TestbedError` carrying the command's stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict

from cluster.errors import ClusterError

log = structlog.get_logger(__name__)

MGMT_IFACE = "mgmt0"
LINK_IFACE = "usb0"
LINK_BRIDGE = "br0"
NAMESPACE_PREFIX = "ctl-"
MGMT_NET = "10.231"
LINK_NET = "10.232"
PREFIX_LEN = 24
TAG_PATTERN = r"^[0-9a-z]{1,6}$"
# Only these names are ever deleted by cleanup: ctl-{tag}-{host} namespaces and the
# ctl{tag}m / ctl{tag}m{i} interfaces of the root namespace.
STALE_NAMESPACE = re.compile(r"^ctl-([0-9a-z]{1,6})-[a-z][a-z0-9-]*$")
STALE_LINK = re.compile(r"^ctl([0-9a-z]{1,6})m[0-9]*$")
NETNS_DIR = Path("/run/netns")


class TestbedError(ClusterError):
    """The testbed could not be built, used or torn down; the message says which step."""

    __test__ = False  # not a pytest test class, despite the name


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostNet(_Record):
    """One host's place on both networks."""

    name: str
    index: int
    namespace: str
    mgmt_veth: str  # root-namespace end of the mgmt0 veth
    link_port: str  # link-namespace end of the usb0 veth
    mgmt_address: ipaddress.IPv4Address
    link_address: ipaddress.IPv4Address


class NetworkLayout(_Record):
    """Every name and address of one testbed; derived from the tag and host names alone."""

    tag: str
    subnet: int
    link_namespace: str
    mgmt_bridge: str
    mgmt_gateway: ipaddress.IPv4Address
    hosts: tuple[HostNet, ...]

    def host(self, name: str) -> HostNet:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(host.name for host in self.hosts)
        raise TestbedError(f"no host {name!r} in testbed {self.tag} (hosts: {known})")

    @property
    def namespaces(self) -> list[str]:
        return [host.namespace for host in self.hosts] + [self.link_namespace]

    @property
    def root_links(self) -> list[str]:
        return [host.mgmt_veth for host in self.hosts] + [self.mgmt_bridge]


class LinkShaping(_Record):
    """What tc actually put on every usb0; the delay needs sch_netem, which may be absent."""

    rate: str | None
    delay_ms: float | None
    delay_applied: bool


def subnet_index(tag: str) -> int:
    """The X of 10.231.X.0/24 and 10.232.X.0/24 for a tag, in 1..254."""
    return int(hashlib.sha256(tag.encode()).hexdigest(), 16) % 254 + 1


def plan_network(tag: str, names: Sequence[str]) -> NetworkLayout:
    """Name and address everything for hosts ``names``; pure, so destroy can redo it."""
    if not re.match(TAG_PATTERN, tag):
        raise TestbedError(f"tag {tag!r} must be 1 to 6 lowercase letters or digits")
    x = subnet_index(tag)
    hosts = tuple(
        HostNet(
            name=name,
            index=i,
            namespace=f"{NAMESPACE_PREFIX}{tag}-{name}",
            mgmt_veth=f"ctl{tag}m{i}",
            link_port=f"p{i}-{name}"[:15],
            mgmt_address=ipaddress.IPv4Address(f"{MGMT_NET}.{x}.{11 + i}"),
            link_address=ipaddress.IPv4Address(f"{LINK_NET}.{x}.{11 + i}"),
        )
        for i, name in enumerate(names)
    )
    return NetworkLayout(
        tag=tag,
        subnet=x,
        link_namespace=f"{NAMESPACE_PREFIX}{tag}-link",
        mgmt_bridge=f"ctl{tag}m",
        mgmt_gateway=ipaddress.IPv4Address(f"{MGMT_NET}.{x}.1"),
        hosts=hosts,
    )


def shaping_commands(
    namespace: str, rate: str | None, delay_ms: float | None
) -> tuple[list[list[str]], list[str] | None]:
    """The tc argvs for usb0: (rate commands, the netem delay command or None).

    htb rather than tbf: tbf needs a burst sized by hand for every rate, htb sizes its own
    and lends GSO packets credit instead of dropping them. netem hangs under the htb class.
    """

    def tc(command: str) -> list[str]:
        return ["tc", "-n", namespace, *command.split()]

    netem = f"netem delay {delay_ms:g}ms limit 10000" if delay_ms else None
    rate_cmds: list[list[str]] = []
    delay_cmd: list[str] | None = None
    if rate is not None:
        htb_rate = f"rate {rate} ceil {rate}"
        rate_cmds = [
            tc(f"qdisc add dev {LINK_IFACE} root handle 1: htb default 10"),
            # An explicit quantum: the one htb derives at Gbit rates is over its own limit.
            tc(f"class add dev {LINK_IFACE} parent 1: classid 1:10 htb {htb_rate} quantum 60000"),
        ]
        if netem:
            delay_cmd = tc(f"qdisc add dev {LINK_IFACE} parent 1:10 handle 10: {netem}")
    elif netem:
        delay_cmd = tc(f"qdisc add dev {LINK_IFACE} root handle 1: {netem}")
    return rate_cmds, delay_cmd


def run_checked(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command, capturing its output; a failure is a TestbedError with its stderr."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise TestbedError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip() or "no output"
        raise TestbedError(f"{' '.join(argv)} exited with {result.returncode}: {detail}")
    return result


def require_root_tools(tools: Iterable[str] = ("ip", "tc")) -> None:
    """Fail with one clear line unless we are root and the tools are installed."""
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, veths, tc)")
    missing = [tool for tool in tools if shutil.which(tool) is None and not Path(tool).exists()]
    if missing:
        raise TestbedError(f"the testbed needs {', '.join(missing)}, which is not installed")


def list_namespaces() -> list[str]:
    result = run_checked(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def list_root_links() -> list[str]:
    result = run_checked(["ip", "-j", "link", "show"], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [str(link["ifname"]) for link in json.loads(result.stdout)]


def root_addresses() -> list[str]:
    result = run_checked(["ip", "-j", "-4", "addr", "show"], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [
        str(info["local"])
        for link in json.loads(result.stdout)
        for info in link.get("addr_info", [])
        if "local" in info
    ]


def tag_in_use(tag: str) -> str | None:
    """Why ``tag`` cannot be used now (its names or its subnet are taken), or None."""
    layout = plan_network(tag, [])
    if any(ns.startswith(f"{NAMESPACE_PREFIX}{tag}-") for ns in list_namespaces()):
        return f"namespaces ctl-{tag}-* exist"
    if layout.mgmt_bridge in list_root_links():
        return f"interface {layout.mgmt_bridge} exists"
    net = ipaddress.IPv4Network(f"{MGMT_NET}.{layout.subnet}.0/{PREFIX_LEN}")
    for address in root_addresses():
        if ipaddress.IPv4Address(address) in net:
            return f"{address} of the root namespace is in {net}"
    return None


def free_tag() -> str:
    """A random 4-hex-digit tag whose names and management subnet are unused right now."""
    for _ in range(64):
        tag = secrets.token_hex(2)
        if tag_in_use(tag) is None:
            return tag
    raise TestbedError("no free testbed tag found; run the stale testbed cleanup")


def claim_tag(layout: NetworkLayout) -> None:
    """Take the tag by creating its link namespace, or fail without touching anything.

    ``ip netns add`` fails if the name exists, so two processes that picked the same tag
    cannot both get here; the loser must not tear down (the names are the winner's).
    """
    reason = tag_in_use(layout.tag)
    if reason is None:
        result = run_checked(["ip", "netns", "add", layout.link_namespace], check=False)
        reason = None if result.returncode == 0 else result.stderr.strip()
    if reason is not None:
        raise TestbedError(f"testbed tag {layout.tag} is in use ({reason}); pick another tag")


def build_commands(layout: NetworkLayout) -> list[list[str]]:
    """Every ``ip`` argv that builds ``layout`` after :func:`claim_tag`, in order; pure."""

    def ip(namespace: str | None, command: str) -> list[str]:
        return ["ip", *(["-n", namespace] if namespace else []), *command.split()]

    link_ns = layout.link_namespace
    cmds: list[list[str]] = []
    for host in layout.hosts:
        cmds.append(ip(None, f"netns add {host.namespace}"))
    for namespace in layout.namespaces:
        cmds.append(ip(namespace, "link set lo up"))
    bridge = layout.mgmt_bridge
    cmds += [
        ip(None, f"link add name {bridge} type bridge"),
        ip(None, f"addr add {layout.mgmt_gateway}/{PREFIX_LEN} dev {bridge}"),
        ip(None, f"link set {bridge} up"),
        ip(link_ns, f"link add name {LINK_BRIDGE} type bridge"),
        ip(link_ns, f"link set {LINK_BRIDGE} up"),
    ]
    for host in layout.hosts:
        ns, veth, port = host.namespace, host.mgmt_veth, host.link_port
        cmds += [
            ip(None, f"link add name {veth} type veth peer name {MGMT_IFACE} netns {ns}"),
            ip(None, f"link set {veth} master {bridge}"),
            ip(None, f"link set {veth} up"),
            ip(ns, f"addr add {host.mgmt_address}/{PREFIX_LEN} dev {MGMT_IFACE}"),
            ip(ns, f"link set {MGMT_IFACE} up"),
            ip(link_ns, f"link add name {port} type veth peer name {LINK_IFACE} netns {ns}"),
            ip(link_ns, f"link set {port} master {LINK_BRIDGE}"),
            ip(link_ns, f"link set {port} up"),
            ip(ns, f"addr add {host.link_address}/{PREFIX_LEN} dev {LINK_IFACE}"),
            ip(ns, f"link set {LINK_IFACE} up"),
        ]
    return cmds


def build_network(layout: NetworkLayout, rate: str | None, delay_ms: float | None) -> LinkShaping:
    """Create every namespace, bridge, veth and address of ``layout`` and shape usb0.

    Call :func:`claim_tag` first. Partial results are not undone here: the caller tears
    down by ``layout``.
    """
    for argv in build_commands(layout):
        run_checked(argv)
    delay_applied = not delay_ms
    for host in layout.hosts:
        rate_cmds, delay_cmd = shaping_commands(host.namespace, rate, delay_ms)
        for argv in rate_cmds:
            run_checked(argv)
        if delay_cmd is not None:
            result = run_checked(delay_cmd, check=False)
            if result.returncode == 0:
                delay_applied = True
            elif "unknown" in result.stderr.lower():
                # Kernels without sch_netem (CONFIG_NET_SCH_NETEM unset) cannot add delay.
                log.warning("testbed.no_netem", namespace=host.namespace, delay_ms=delay_ms)
            else:
                raise TestbedError(f"{' '.join(delay_cmd)} failed: {result.stderr.strip()}")
    return LinkShaping(rate=rate, delay_ms=delay_ms, delay_applied=delay_applied)


def pid_in_namespace(pid: int, namespace: str) -> bool:
    """Whether process ``pid`` lives in network namespace ``namespace`` (not a reused pid)."""
    try:
        ns = (NETNS_DIR / namespace).stat()
        proc = Path(f"/proc/{pid}/ns/net").stat()
    except OSError:
        return False
    return (ns.st_dev, ns.st_ino) == (proc.st_dev, proc.st_ino)


def namespace_pids(namespace: str) -> list[int]:
    result = run_checked(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone (it holds no namespace)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def kill_pids(pids: Iterable[int], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``timeout_s``."""
    remaining = set(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            remaining = {pid for pid in remaining if _alive(pid)}
            if not remaining:
                return
            time.sleep(0.05)


def teardown_network(layout: NetworkLayout, pids: Iterable[int] = ()) -> list[str]:
    """Remove everything ``layout`` names, whatever state it is in; returns what failed.

    Processes first (``pids`` only if they are still in one of our namespaces, then every
    process ``ip netns pids`` finds), so no namespace outlives its deletion.
    """
    namespaces = set(list_namespaces())
    ours = [ns for ns in layout.namespaces if ns in namespaces]
    kill_pids(pid for pid in pids if any(pid_in_namespace(pid, ns) for ns in ours))
    kill_pids(pid for ns in ours for pid in namespace_pids(ns))
    problems: list[str] = []
    links = set(list_root_links())
    for name in layout.root_links:
        if name in links:
            result = run_checked(["ip", "link", "del", name], check=False)
            if result.returncode != 0:
                problems.append(f"ip link del {name}: {result.stderr.strip()}")
    for namespace in ours:
        result = run_checked(["ip", "netns", "del", namespace], check=False)
        if result.returncode != 0:
            problems.append(f"ip netns del {namespace}: {result.stderr.strip()}")
    return problems


def find_leftovers(tag: str | None = None) -> dict[str, list[str]]:
    """Our namespaces and root interfaces by tag (all tags, or just ``tag``)."""
    found: dict[str, list[str]] = {}
    for name in list_namespaces():
        match = STALE_NAMESPACE.match(name)
        if match and (tag is None or match.group(1) == tag):
            found.setdefault(match.group(1), []).append(name)
    for name in list_root_links():
        match = STALE_LINK.match(name.split("@")[0])
        if match and (tag is None or match.group(1) == tag):
            found.setdefault(match.group(1), []).append(name)
    return found


def destroy_stale(tag: str | None = None) -> dict[str, list[str]]:
    """Remove testbed namespaces and interfaces by naming pattern; returns what was removed.

    Without ``tag`` this removes every clusterctl testbed on the machine, live ones of
    other processes included: use it for leftovers of killed runs, not while tests run.
    Nothing that does not match our naming is touched.
    """
    found = find_leftovers(tag)
    for names in found.values():
        namespaces = [name for name in names if STALE_NAMESPACE.match(name)]
        kill_pids(pid for ns in namespaces for pid in namespace_pids(ns))
        for name in names:
            if name not in namespaces:
                run_checked(["ip", "link", "del", name], check=False)
        for ns in namespaces:
            run_checked(["ip", "netns", "del", ns], check=False)
    return found
