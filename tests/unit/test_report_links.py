"""Where the loads' time went, as reports show it: the link lines of recorded attempts."""

from __future__ import annotations

from pathlib import Path

from cluster.orchestration.linkstats import LinkLoad
from cluster.report.links import link_lines, shown_loads
from cluster.report.tables import results_markdown
from cluster.store import Store

GB = 10**9


def link(worker: str, gb: float, seconds: float, capacity_gbit: float | None) -> LinkLoad:
    return LinkLoad(
        worker=worker,
        interface="tb0",
        rx_bytes=int(gb * GB),
        tx_bytes=int(gb * GB) // 50,
        seconds=seconds,
        capacity_bps=capacity_gbit * 1e9 if capacity_gbit else None,
    )


def record(store: Store, loads: list[tuple[str, float, list[LinkLoad]]]) -> int:
    """A launch run with one attempt per (outcome, load seconds, links)."""
    run_id = store.start_run("launch", "minimax-q8", {})
    for number, (outcome, seconds, links) in enumerate(loads, start=1):
        attempt = store.start_attempt(run_id, number, "1.2/0.8", {})
        store.finish_attempt(attempt, outcome, load_seconds=seconds, links=links)
    return run_id


def test_first_and_last_ready_loads_are_shown(tmp_path: Path) -> None:
    cold = [link("bee", 74, 190.0, 9.4), link("cat", 1, 190.0, None)]
    cached = [link("bee", 0.004, 95.0, 9.4)]
    with Store(tmp_path) as store:
        run_id = record(
            store,
            [("failed", 12.0, []), ("ready", 190.0, cold), ("ready", 96.0, []), ("ready", 95.0, cached)],
        )
        attempts = store.attempts(run_id)
    assert [a.number for a in shown_loads(attempts)] == [2, 4]
    assert link_lines(attempts) == [
        "- link during load 2, 190.0 s: bee: 74 GB in 190.0 s, 3.12 Gbit/s of 9.4 Gbit/s "
        "(33%): the head (read, hash, send) is the bottleneck; the rpc-server cache does not "
        "pay (hash 82.2 s vs transfer 63.0 s)",
        "- link during load 2, 190.0 s: cat: 1 GB in 190.0 s, 0.0421 Gbit/s: link capacity "
        "unknown (clusterctl health --throughput)",
        "- link during load 4, 95.0 s: bee: 0.004 GB in 95.0 s, 0.000337 Gbit/s of 9.4 "
        "Gbit/s (0%): too little moved to judge",
    ]
    assert shown_loads(attempts[:2])[0].number == 2


def test_markdown_setup_has_the_link_lines(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_id = record(store, [("ready", 600.0, [link("bee", 69, 600.0, 0.94)])])
        run = store.run(run_id)
        assert run is not None
        markdown = results_markdown(run, [], store.attempts(run_id))
    assert "- link during load 1, 600.0 s: bee: 69 GB in 600.0 s" in markdown
    assert "the link is the bottleneck; the rpc-server cache pays" in markdown


def test_no_links_no_lines(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        run_id = record(store, [("ready", 1.0, [])])
        assert link_lines(store.attempts(run_id)) == []
