"""health's verdicts from facts (``evaluate`` is pure): the link, the route and round trip
to each worker, ports (ours, free, taken), strays, and an unreachable host."""

from __future__ import annotations

from cluster import facts
from cluster.config.models import Inventory
from cluster.orchestration.health import Level, evaluate
from cluster.orchestration.hostfacts import HostFacts, PathFacts
from cluster.orchestration.processes import ManagedProcess

INVENTORY = Inventory.model_validate(
    {
        "cluster": {"head": "evo"},
        "hosts": {
            name: {
                "ssh_target": mgmt,
                "link_address": link,
                "link_interface": "usb0",
                "llama_bin_dir": "/opt/bin",
            }
            for name, mgmt, link in (
                ("evo", "192.168.1.10", "10.99.0.1"),
                ("bee", "192.168.1.11", "10.99.0.2"),
            )
        },
    }
)


def good(name: str) -> HostFacts:
    host = INVENTORY.hosts[name]
    found = HostFacts(host, ssh_s=0.02)
    found.link = facts.LinkState("usb0", True, True, (f"{host.link_address}/30",))
    found.memory = facts.Memory(128 << 30, 100 << 30, {})
    return found


def by_name(evo: HostFacts, bee: HostFacts) -> dict[tuple[str, str], tuple[Level, str, str]]:
    return {
        (c.host, c.name): (c.level, c.value, c.detail)
        for c in evaluate(INVENTORY, {"evo": evo, "bee": bee})
    }


def with_path(evo: HostFacts, route: facts.Route, rtt: float | None = 0.4) -> HostFacts:
    evo.paths = [PathFacts("bee", route, rtt_ms=rtt)]
    return evo


def test_the_link_verdicts() -> None:
    bee = good("bee")
    bee.link = facts.LinkState("usb0", True, False, ())
    assert by_name(good("evo"), bee)[("bee", "link")][:2] == (Level.FAIL, "down")
    bee.link = facts.LinkState("usb0", False, False, ())
    assert by_name(good("evo"), bee)[("bee", "link")][:2] == (Level.FAIL, "missing")
    bee.link = facts.LinkState("usb0", True, True, ("10.99.0.6/30",))
    level, value, detail = by_name(good("evo"), bee)[("bee", "link")]
    assert (level, value) == (Level.FAIL, "no address") and "not 10.99.0.2" in detail
    assert by_name(good("evo"), good("bee"))[("bee", "link")][0] is Level.OK


def test_a_route_over_the_management_network_and_a_lost_ping_fail() -> None:
    evo = with_path(good("evo"), facts.Route("10.99.0.2", "eth0", "192.168.1.10", None), None)
    found = by_name(evo, good("bee"))
    level, value, detail = found[("evo", "route→bee")]
    assert (level, value) == (Level.FAIL, "eth0") and "leaves by eth0, not the link usb0" in detail
    assert found[("evo", "rtt→bee")][:2] == (Level.FAIL, "lost")
    evo = with_path(good("evo"), facts.Route("10.99.0.2", "usb0", "10.99.0.1", None))
    ok = by_name(evo, good("bee"))
    assert ok[("evo", "route→bee")][0] is Level.OK and ok[("evo", "rtt→bee")][1] == "0.40 ms"


def test_ports_taken_by_others_fail_ours_and_free_are_ok() -> None:
    bee = good("bee")
    bee.listeners = [facts.Listener("10.99.0.2", 50052, (4242,))]
    level, value, detail = by_name(good("evo"), bee)[("bee", "port 50052")]
    assert (level, value) == (Level.FAIL, "taken") and "pid 4242" in detail
    bee.managed = [ManagedProcess("bee", "rpc-server", 4242, "S", 10, {})]
    assert by_name(good("evo"), bee)[("bee", "port 50052")][:2] == (Level.OK, "ours")
    assert by_name(good("evo"), good("bee"))[("bee", "port 50052")][:2] == (Level.OK, "free")


def test_strays_warn_and_an_unreachable_host_fails_alone() -> None:
    bee = good("bee")
    bee.servers = [facts.ServerProcess(999, "llama-server", 999)]
    level, value, detail = by_name(good("evo"), bee)[("bee", "strays")]
    assert (level, value) == (Level.WARN, "1") and "llama-server pid 999" in detail
    gone = HostFacts(INVENTORY.hosts["bee"], error="ssh to 192.168.1.11: connection refused")
    found = by_name(good("evo"), gone)
    assert found[("bee", "ssh")] == (Level.FAIL, "unreachable", gone.error)
    assert {host for host, _ in found} == {"evo", "bee"}  # evo is still judged
    assert found[("evo", "link")][0] is Level.OK
