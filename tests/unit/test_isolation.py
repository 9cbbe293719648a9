"""Is the link the only way in? nftables rules read from a real ruleset, and health's
verdicts on exposure from facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config.models import HostConfig
from cluster.facts import parse_default_routes
from cluster.firewall import Firewall, guarded, parse_ruleset
from cluster.orchestration import isolation
from cluster.orchestration.hostfacts import HostFacts
from cluster.orchestration.verdicts import Level

# `nft -j list ruleset` of a namespace holding the documented rule (usb0, 50052) and rules
# for other ports and interfaces, one of them in a forward chain (not about input).
RULESET = Path(__file__).resolve().parent.parent / "fixtures" / "facts" / "nft" / "ruleset.json"


def firewall() -> Firewall:
    return parse_ruleset(0, RULESET.read_text(), "")


@pytest.mark.parametrize(
    ("port", "interface", "expected"),
    [
        (50052, "usb0", True),  # the documented rule
        (50052, "thunderbolt0", False),  # the rule names another link interface
        (50053, "usb0", False),  # another port
        (22, "eth9", True),  # a set of ports, reject
        (50150, "eth9", True),  # a range in a set
        (50201, "eth9", False),
        (50300, "usb0", False),  # a forward chain does not guard the host itself
    ],
)
def test_guarded_reads_the_rules(port: int, interface: str, expected: bool) -> None:
    assert guarded(firewall(), port, interface) is expected


def test_unreadable_rules_say_why() -> None:
    unreadable = parse_ruleset(3, "", "cannot read the nftables rules (nft needs root)")
    assert unreadable.unreadable.startswith("cannot read") and not guarded(unreadable, 1, "x")
    assert parse_ruleset(0, "not json", "").unreadable == "nft printed no JSON"


def test_default_routes() -> None:
    out = '[{"dst":"default","gateway":"192.168.1.1","dev":"enp1s0","flags":[]}]'
    assert parse_default_routes(0, out) == ("enp1s0",)
    assert parse_default_routes(2, "") == () and parse_default_routes(0, "garbage") == ()


def facts(link: str = "10.99.0.2", **kwargs: object) -> HostFacts:
    host = HostConfig(
        name="bee",
        ssh_target="bee.lan",
        link_address=link,
        link_interface="usb0",
        llama_bin_dir="/opt/bin",
    )
    found = HostFacts(host, ssh_s=0.01)
    for key, value in kwargs.items():
        setattr(found, key, value)
    return found


def verdicts(f: HostFacts) -> dict[str, tuple[Level, str]]:
    return {c.name: (c.level, c.detail) for c in isolation.checks(f, rpc_host=True)}


def test_a_guarded_private_link_is_ok() -> None:
    found = verdicts(facts(reached_by=("192.168.1.20",), firewall=firewall()))
    assert found["link private"][0] is Level.OK
    assert found["rpc 50052 reach"] == (
        Level.OK,
        "nftables drops tcp/50052 arriving other than on usb0",
    )


def test_the_controller_reaching_the_host_by_its_link_address_fails() -> None:
    found = verdicts(facts(reached_by=("10.99.0.2",), firewall=firewall()))
    assert found["link private"][0] is Level.FAIL
    assert "reaches bee by 10.99.0.2, its link address" in found["link private"][1]


def test_a_default_route_over_the_link_fails() -> None:
    found = verdicts(facts(default_routes=("usb0",), firewall=firewall()))
    assert found["link private"][0] is Level.FAIL
    assert "usb0 carries bee's default route" in found["link private"][1]


def test_an_open_rpc_port_warns_with_the_fix() -> None:
    open_port = verdicts(facts(firewall=parse_ruleset(0, '{"nftables": []}', "")))
    level, detail = open_port["rpc 50052 reach"]
    assert level is Level.WARN and "answers on every interface" in detail
    assert 'tcp dport 50052 iifname != "usb0" drop' in detail
    unknown = verdicts(facts(firewall=parse_ruleset(3, "", "nft needs root")))
    assert unknown["rpc 50052 reach"][0] is Level.WARN
    assert "nft needs root" in unknown["rpc 50052 reach"][1]


def test_a_loopback_link_is_private_to_this_machine() -> None:
    assert verdicts(facts(link="127.0.0.3"))["rpc 50052 reach"][0] is Level.OK
    assert "rpc 50052 reach" not in {
        c.name for c in isolation.checks(facts(), rpc_host=False)
    }
