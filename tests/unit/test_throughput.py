"""When health measures the link throughput, and what it shows of the last measurement."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cluster import facts
from cluster.config.models import Inventory
from cluster.orchestration.health import Check, Level, evaluate
from cluster.orchestration.hostfacts import HostFacts, PathFacts
from cluster.orchestration.throughput import Mode, Plan, age_text, plan_from
from cluster.store import Store, Throughput

HOUR = 3600.0
NOW = 1_000_000.0


def last(worker: str, hours_ago: float, bps: float = 9.4e8) -> Throughput:
    return Throughput(head="evo", worker=worker, bps=bps, at=NOW - hours_ago * HOUR)


def plan(mode: Mode, max_age_h: float = 24, **last_hours: float) -> Plan:
    known = {worker: last(worker, hours) for worker, hours in last_hours.items()}
    return Plan(mode, max_age_h * HOUR, known, NOW)


# ------------------------------------------------------------------------- the decision


def test_by_default_a_path_is_measured_when_never_measured_or_older_than_the_age() -> None:
    p = plan(Mode.WHEN_OLD, 24, bee=3, ant=25)
    assert (p.due("bee"), p.due("ant"), p.due("new")) == (False, True, True)


def test_the_age_limit_itself_is_not_yet_too_old() -> None:
    assert not plan(Mode.WHEN_OLD, 24, bee=24).due("bee")
    assert plan(Mode.WHEN_OLD, 24, bee=24.001).due("bee")


def test_asked_measures_every_path_and_quick_none() -> None:
    assert plan(Mode.MEASURE, 24, bee=0.1).due("bee")
    assert not plan(Mode.SKIP, 24, bee=500).due("bee")
    assert not plan(Mode.SKIP, 24).due("bee")  # never measured, still not measured


def test_a_maximum_age_of_zero_measures_every_time_and_infinity_only_once() -> None:
    assert plan(Mode.WHEN_OLD, 0, bee=0).due("bee")
    forever = plan(Mode.WHEN_OLD, math.inf, bee=10_000)
    assert not forever.due("bee") and forever.due("new")


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_a_negative_or_nan_age_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="must be >= 0 hours"):
        plan(Mode.WHEN_OLD, bad)


def test_a_measurement_from_the_future_is_zero_old() -> None:
    p = Plan(Mode.WHEN_OLD, HOUR, {"bee": last("bee", -5)}, NOW)
    assert p.age_s("bee") == 0.0 and not p.due("bee")


def test_the_plan_reads_and_keeps_measurements_in_the_record(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.record_throughput(Throughput(head="evo", worker="bee", bps=1e9, at=1.0))
        first = plan_from(store, "evo", Mode.WHEN_OLD, 24)
        assert first.last["bee"].bps == 1e9 and first.due("bee")  # at 1.0: long ago
        first.record(Throughput(head="evo", worker="bee", bps=2e9, at=first.now))
        assert not plan_from(store, "evo", Mode.WHEN_OLD, 24).due("bee")


# ----------------------------------------------------------------------- the age shown


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s ago"),
        (-3, "0 s ago"),
        (89, "89 s ago"),
        (90, "2 min ago"),
        (45 * 60, "45 min ago"),
        (89 * 60, "89 min ago"),
        (90 * 60, "1.5 h ago"),
        (47.9 * HOUR, "47.9 h ago"),
        (48 * HOUR, "2.0 days ago"),
        (10.25 * 86400, "10.2 days ago"),
    ],
)
def test_age_text(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


# ------------------------------------------------------------------- the check health shows

INVENTORY = Inventory.model_validate(
    {
        "cluster": {"head": "evo"},
        "hosts": {
            name: {
                "transport": "local",
                "link_address": address,
                "link_interface": "lo",
                "llama_bin_dir": "/opt/llama/bin",
            }
            for name, address in (("evo", "127.0.0.2"), ("bee", "127.0.0.3"))
        },
    }
)


def throughput_check(path: PathFacts, p: Plan | None) -> Check:
    head = HostFacts(INVENTORY.hosts["evo"], ssh_s=0.01, paths=[path])
    bee = HostFacts(INVENTORY.hosts["bee"], ssh_s=0.01)
    checks = evaluate(INVENTORY, {"evo": head, "bee": bee}, throughput=p)
    [check] = [c for c in checks if c.name == "throughput→bee"]
    assert check.host == "evo"
    return check


def path(bps: float | None = None, note: str = "") -> PathFacts:
    route = facts.Route("127.0.0.3", "lo", "127.0.0.2", None)
    return PathFacts("bee", route, rtt_ms=0.05, throughput_bps=bps, throughput_note=note)


def test_a_path_measured_now_says_so() -> None:
    check = throughput_check(path(9.41e8), plan(Mode.MEASURE, 24, bee=1))
    assert (check.level, check.value) == (Level.OK, "0.94 Gbit/s")
    assert check.detail == "iperf3 over the link, measured now"


def test_a_path_not_due_shows_the_last_measurement_and_its_age() -> None:
    check = throughput_check(path(note="not measured"), plan(Mode.WHEN_OLD, 24, bee=3.5))
    assert (check.level, check.value) == (Level.OK, "0.94 Gbit/s")
    assert check.detail == (
        "iperf3 over the link, measured 3.5 h ago; not measured now: younger than the "
        "maximum age of 24 h (--throughput measures now)"
    )


def test_quick_shows_the_last_measurement_however_old() -> None:
    check = throughput_check(path(note="not measured"), plan(Mode.SKIP, 24, bee=24 * 30))
    assert (check.level, check.value) == (Level.OK, "0.94 Gbit/s")
    assert (
        check.detail == "iperf3 over the link, measured 30.0 days ago; not measured now (--quick)"
    )


def test_quick_without_a_measurement_warns_how_to_get_one() -> None:
    check = throughput_check(path(note="not measured"), plan(Mode.SKIP))
    assert (check.level, check.value) == (Level.WARN, "-")
    assert check.detail == "never measured (--throughput measures it)"


def test_a_due_measurement_that_failed_warns_and_names_the_last() -> None:
    check = throughput_check(path(note="iperf3 missing on bee"), plan(Mode.WHEN_OLD, 24, bee=30))
    assert (check.level, check.value) == (Level.WARN, "-")
    assert check.detail == "iperf3 missing on bee; last 0.94 Gbit/s measured 30.0 h ago"
    first = throughput_check(path(note="iperf3 missing on bee"), plan(Mode.WHEN_OLD))
    assert (first.level, first.detail) == (Level.WARN, "iperf3 missing on bee")


def test_without_a_plan_a_path_not_measured_warns() -> None:
    check = throughput_check(path(note="not measured"), None)
    assert (check.level, check.value, check.detail) == (Level.WARN, "-", "not measured")
