"""Where this machine reaches the llama-server that ``up`` started, and how.

llama-server listens on the profile's ``bind_host`` on the head. Whether the controller
can use that address depends on how it reaches the head:

- a ``local`` head runs on this machine: the address is reachable as it is (a wildcard
  bind through 127.0.0.1);
- an ``ssh`` head bound to its loopback (the default): only the head itself can open it,
  so the controller needs an SSH local port forward. ``tunnel_argv`` is that command, complete
  with what the inventory knows of the host (user, port, key, its own known_hosts file,
  or the explicit opt-out of host key checking), and the endpoint is the forwarded port on
  this machine;
- an ``ssh`` head bound to another address: that address (for a wildcard bind, the name or
  address ssh reaches the host by), reachable directly when this machine is on that
  network.

Pure: records in, an ``Endpoint`` out; nothing is run.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from enum import StrEnum

from cluster.config.models import HostConfig, Inventory, Profile


class Access(StrEnum):
    DIRECT = "direct"
    TUNNEL = "ssh tunnel"


@dataclass(frozen=True)
class Endpoint:
    """The URL this machine uses, and whether it needs ``tunnel`` (an argv) running first."""

    url: str
    access: Access
    tunnel: tuple[str, ...] = ()

    @property
    def tunnel_command(self) -> str | None:
        return shlex.join(self.tunnel) if self.tunnel else None

    def explain(self) -> str:
        """One line for people: which kind of endpoint this is and what to do with it."""
        if self.access is Access.TUNNEL:
            return (
                f"{self.url} is the head's loopback, forwarded to this machine through an ssh "
                f"tunnel; start it first: {self.tunnel_command}"
            )
        return f"{self.url} is reachable directly from this machine"


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _is_loopback(address: str) -> bool:
    ip = _ip(address)
    return address == "localhost" or (ip is not None and ip.is_loopback)


def _is_wildcard(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_unspecified


def _bracketed(address: str) -> str:
    """An IPv6 address in brackets, as URLs and ``ssh -L`` write it."""
    return f"[{address}]" if ":" in address else address


def url(address: str, port: int) -> str:
    return f"http://{_bracketed(address)}:{port}"


def tunnel_argv(host: HostConfig, port: int, remote: str = "127.0.0.1") -> list[str]:
    """``ssh -N -L PORT:REMOTE:PORT ...`` to ``host``, as the ssh transport reaches it."""
    argv = ["ssh", "-N", "-L", f"{port}:{_bracketed(remote)}:{port}"]
    if host.ssh_port is not None:
        argv += ["-p", str(host.ssh_port)]
    if host.ssh_key is not None:
        argv += ["-i", str(host.ssh_key.expanduser())]
    if host.insecure_skip_host_key_check:
        argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    elif host.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={host.known_hosts.expanduser()}"]
    target = host.ssh_target or host.name
    argv.append(f"{host.user}@{target}" if host.user else target)
    return argv


def served_endpoint(inventory: Inventory, profile: Profile) -> Endpoint:
    """The endpoint of ``profile``'s llama-server as this machine can use it."""
    head = inventory.head
    bound, port = profile.bind_host, profile.port
    if head.transport == "local":
        return Endpoint(url("127.0.0.1" if _is_wildcard(bound) else bound, port), Access.DIRECT)
    if _is_loopback(bound):
        return Endpoint(
            url("127.0.0.1", port), Access.TUNNEL, tuple(tunnel_argv(head, port, bound))
        )
    if _is_wildcard(bound):
        return Endpoint(url(head.ssh_target or head.name, port), Access.DIRECT)
    return Endpoint(url(bound, port), Access.DIRECT)
