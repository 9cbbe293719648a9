"""The link is the only way in: health's checks that rpc-server stays private.

- The link address must not be the address the controller reaches the host by, and the
  link interface must not carry the host's default route: either makes the "private"
  link a way into (or out of) another network. Both fail.
- A worker's rpc port must not be reachable from the management side. Linux answers for
  any local address on any interface, so binding the link address alone is not enough:
  a LAN peer routing the link address through the host's management interface reaches
  the unauthenticated rpc-server. ``cluster.firewall`` reads the nftables rules: a rule
  that drops the port on every interface but the link is ok, none is a warning with the
  fix, rules that cannot be read are a warning saying so. A loopback link (the demo) is
  reachable from this machine only.
- A profile serving beyond loopback without an API key (``allow_unauthenticated``) warns.
"""

from __future__ import annotations

import ipaddress

from cluster.firewall import fix_text, guarded
from cluster.orchestration.hostfacts import HostFacts
from cluster.orchestration.verdicts import Check, fail, ok, warn


def checks(f: HostFacts, *, rpc_host: bool) -> list[Check]:
    host = f.host
    link = str(host.link_address)
    iface = host.link_interface
    found = []
    if link in f.reached_by:
        found.append(
            fail(
                f.name,
                "link private",
                link,
                f"the controller reaches {f.name} by {link}, its link address: the link must be "
                "a network of its own (rpc-server on it is unauthenticated)",
            )
        )
    elif iface in f.default_routes:
        found.append(
            fail(
                f.name,
                "link private",
                iface,
                f"{iface} carries {f.name}'s default route: the link must be a private cable, "
                "not the way to other networks",
            )
        )
    else:
        found.append(
            ok(
                f.name,
                "link private",
                "yes",
                f"{link} is not the management address; no default route over {iface}",
            )
        )
    if rpc_host:
        found.append(_rpc_port(f))
    return found


def _rpc_port(f: HostFacts) -> Check:
    host = f.host
    port, iface = host.rpc_port, host.link_interface
    name = f"rpc {port} reach"
    if ipaddress.ip_address(str(host.link_address)).is_loopback:
        return ok(f.name, name, "loopback", "a loopback link address: only this machine")
    firewall = f.firewall
    if firewall is None or firewall.unreadable:
        why = firewall.unreadable if firewall is not None else "not read"
        return warn(
            f.name,
            name,
            "unknown",
            f"cannot tell whether tcp/{port} is reachable from the management side ({why}); "
            "docs/security.md gives the nftables rule that limits it to the link",
        )
    if guarded(firewall, port, iface):
        return ok(
            f.name, name, "link only", f"nftables drops tcp/{port} arriving other than on {iface}"
        )
    return warn(
        f.name,
        name,
        "any interface",
        f"tcp/{port} answers on every interface: a LAN peer routing {host.link_address} via "
        f"{f.name}'s management address reaches the unauthenticated rpc-server; fix: "
        f"{fix_text(port, iface)}",
    )


def exposed_server(head: str, bind_host: str, port: int) -> Check:
    return warn(
        head,
        f"port {port} auth",
        "none",
        f"llama-server listens on {bind_host}:{port} without an API key "
        "(allow_unauthenticated = true): anyone who reaches it can use it",
    )
