"""Is a worker's rpc-server reachable only over the link? Read from its nftables rules.

rpc-server binds only the link address, but Linux answers for any of its addresses on any
interface: a peer on the management LAN with a route to the link address through the
host's management interface reaches the unauthenticated rpc port. The fix is a firewall
rule accepting the rpc port only on the link interface (docs/security.md):

    table inet clusterctl {
      chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 50052 iifname != "thunderbolt0" drop comment "clusterctl: rpc only over the link"
      }
    }

``guarded`` reads ``nft -j list ruleset`` (root, or ``sudo -n``) and says whether an input
rule drops or rejects TCP to the port arriving on any interface but the link, also when it
is written as a set of ports, a range or with ``reject``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RULESET_SCRIPT = r"""
nft -j list ruleset 2>/dev/null && exit 0
sudo -n nft -j list ruleset 2>/dev/null && exit 0
echo "cannot read the nftables rules (nft needs root, or sudo -n nft)" >&2
exit 3
"""


def ruleset_command() -> list[str]:
    return ["sh", "-c", RULESET_SCRIPT]


@dataclass(frozen=True)
class Firewall:
    """What was read: the ruleset's objects, or why it could not be read."""

    objects: tuple[dict[str, Any], ...]
    unreadable: str = ""


def parse_ruleset(exit_status: int, stdout: str, stderr: str) -> Firewall:
    if exit_status != 0:
        return Firewall((), stderr.strip() or f"nft exited with {exit_status}")
    try:
        data = json.loads(stdout)
    except ValueError:
        return Firewall((), "nft printed no JSON")
    objects = data.get("nftables", []) if isinstance(data, dict) else []
    return Firewall(tuple(o for o in objects if isinstance(o, dict)))


def _covers_port(right: Any, port: int) -> bool:
    if isinstance(right, int):
        return right == port
    if isinstance(right, dict) and "set" in right:
        return any(_covers_port(item, port) for item in right["set"])
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return isinstance(low, int) and isinstance(high, int) and low <= port <= high
    if isinstance(right, list):
        return any(_covers_port(item, port) for item in right)
    return False


def _rule_guards(expressions: Iterable[Any], port: int, link: str) -> bool:
    port_match = other_interfaces = dropped = False
    for expr in expressions:
        if not isinstance(expr, dict):
            continue
        if "drop" in expr or "reject" in expr:
            dropped = True
        match = expr.get("match")
        if not isinstance(match, dict):
            continue
        left, op, right = match.get("left"), match.get("op"), match.get("right")
        payload = left.get("payload") if isinstance(left, dict) else None
        meta = left.get("meta") if isinstance(left, dict) else None
        if (
            isinstance(payload, dict)
            and payload.get("protocol") in ("tcp", "th")
            and payload.get("field") == "dport"
            and op in ("==", "in")
        ):
            port_match = _covers_port(right, port)
        if isinstance(meta, dict) and meta.get("key") == "iifname" and op == "!=":
            other_interfaces = right == link
    return port_match and other_interfaces and dropped


def guarded(firewall: Firewall, port: int, link_interface: str) -> bool:
    """Does an input-hook rule drop TCP to ``port`` arriving on any interface but the link?"""
    input_chains = {
        (c["chain"].get("family"), c["chain"].get("table"), c["chain"].get("name"))
        for c in firewall.objects
        if isinstance(c.get("chain"), dict) and c["chain"].get("hook") == "input"
    }
    for obj in firewall.objects:
        rule = obj.get("rule")
        if not isinstance(rule, dict):
            continue
        if (rule.get("family"), rule.get("table"), rule.get("chain")) not in input_chains:
            continue
        if _rule_guards(rule.get("expr", []), port, link_interface):
            return True
    return False


def fix_text(port: int, link_interface: str) -> str:
    """The nft command that adds the rule (docs/security.md explains it)."""
    return (
        "nft add table inet clusterctl; nft add chain inet clusterctl input '{ type filter "
        "hook input priority 0; policy accept; }'; nft add rule inet clusterctl input tcp "
        f'dport {port} iifname != "{link_interface}" drop'
    )
