"""What ``status`` says of the serving load: each worker's link, read from a real record
(the attempt named by the running llama-server's metadata), as figures and as a table, and
through the real command against a stand-in llama-server (``sleep``) started as ``up``
starts one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from support import clusterctl

from cluster.cli import render
from cluster.config.loader import load_inventory
from cluster.orchestration import processes
from cluster.orchestration.control import ComponentStatus, serving_launch
from cluster.orchestration.linkstats import Bottleneck, LinkLoad
from cluster.report.links import ServingLoad, serving_load
from cluster.store import Store
from cluster.transport.local import LocalTransport

MB = 10**6


def link(worker: str, mb: float, seconds: float, capacity_mbit: float | None) -> LinkLoad:
    return LinkLoad(
        worker=worker,
        interface="usb0",
        rx_bytes=int(mb * MB),
        tx_bytes=int(mb * MB) // 50,
        seconds=seconds,
        capacity_bps=capacity_mbit * 1e6 if capacity_mbit else None,
        capacity_at=1_700_000_000.0 if capacity_mbit else None,
    )


# Attempt 1 hung; attempt 2 serves: bee's cold load over a 100 Mbit/s link (the link is the
# bottleneck, the cache pays), cat's over 9.4 Gbit/s (the head is, the cache does not pay),
# dog's with no capacity measured, eel's too small to judge.
SERVING = [
    link("bee", 104.0, 9.84, 95.6),
    link("cat", 74_000.0, 190.0, 9400.0),
    link("dog", 500.0, 9.84, None),
    link("eel", 1.6, 0.5, 929.0),
]


def recorded(tmp_path: Path, links: list[LinkLoad]) -> int:
    with Store(tmp_path) as store:
        run_id = store.start_run("launch", "slow", {})
        hung = store.start_attempt(run_id, 1, "1/1", {})
        store.finish_attempt(hung, "failed", failure_class="hang", links=[link("bee", 50, 5, 95.6)])
        ready = store.start_attempt(run_id, 2, "1/1", {})
        store.finish_attempt(ready, "ready", load_seconds=9.84, links=links)
    return run_id


def load_of(tmp_path: Path, run_id: int, attempt: int) -> ServingLoad | None:
    with Store(tmp_path) as store:
        return serving_load(store, run_id, attempt)


def rendered(launch: tuple[int, int], load: ServingLoad | None) -> str:
    console = Console(record=True, width=200)
    render.serving_load(console, launch, load)
    return console.export_text()


def test_the_serving_attempts_links_with_their_verdicts(tmp_path: Path) -> None:
    run_id = recorded(tmp_path, SERVING)
    load = load_of(tmp_path, run_id, 2)
    assert load is not None and (load.run_id, load.attempt, load.load_seconds) == (run_id, 2, 9.84)
    bee, cat, dog, eel = load.links
    assert bee.bytes == 104 * MB and round(bee.throughput_bps / 1e6, 1) == 84.6
    assert round(bee.utilisation or 0, 2) == 0.88 and bee.bottleneck is Bottleneck.LINK
    assert bee.cache_pays is True and bee.capacity_at == 1_700_000_000.0
    assert cat.bottleneck is Bottleneck.HEAD and cat.cache_pays is False
    assert dog.bottleneck is Bottleneck.UNKNOWN and dog.cache_pays is None
    assert dog.utilisation is None and dog.transfer_s is None
    # Under 16 MiB says nothing of the link, nor of the cache (hashing 1.6 MB is "cheaper").
    assert eel.bottleneck is Bottleneck.TOO_LITTLE and eel.cache_pays is None
    # --json: the words as they are shown, the verdict in full.
    document = load.model_dump(mode="json")
    assert [w["bottleneck"] for w in document["links"]] == [
        "link",
        "head",
        "unknown",
        "too little moved",
    ]
    assert document["links"][0]["verdict"].startswith("the link is the bottleneck; the rpc-server")


def test_the_table_shows_each_worker(tmp_path: Path) -> None:
    run_id = recorded(tmp_path, SERVING)
    text = rendered((run_id, 2), load_of(tmp_path, run_id, 2))
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == f"links during the serving load (run {run_id}, attempt 2, 9.8 s)"
    rows = {line.split()[1]: " ".join(line.split()) for line in lines if line.startswith("│ ")}
    assert rows["bee"] == (
        "│ bee │ usb0 │ 104.0 MB │ 84.6 Mbit/s │ 95.6 Mbit/s │ 88% │ link │ "
        "pays (hash 0.1 s vs send 8.7 s) │"
    )
    assert rows["cat"].startswith("│ cat │ usb0 │ 74.0 GB │ 3.12 Gbit/s │ 9.4 Gbit/s │ 33% │")
    assert rows["cat"].endswith("│ head │ does not pay (hash 82.2 s vs send 63.0 s) │")
    assert "│ not measured │ - │ unknown │ - │" in rows["dog"]
    assert "│ 1.6 MB │" in rows["eel"] and rows["eel"].endswith("│ too little moved │ - │")
    assert lines[-1] == "a capacity is missing or out of date: clusterctl health --throughput"


def test_what_status_says_when_there_is_nothing_to_show(tmp_path: Path) -> None:
    run_id = recorded(tmp_path, [])
    assert rendered((run_id, 2), load_of(tmp_path, run_id, 2)).strip() == (
        f"links: the serving load (run {run_id}, attempt 2) recorded no worker's link"
    )
    assert load_of(tmp_path, run_id, 3) is None and load_of(tmp_path, run_id + 1, 1) is None
    assert rendered((run_id + 1, 1), None).strip() == (
        f"links: the serving load (run {run_id + 1}, attempt 1) is not in this state "
        "directory's record"
    )


def component(name: str, alive: bool, run_id: int | None, attempt: int | None) -> ComponentStatus:
    return ComponentStatus(
        "evo", name, 7, alive, "S", 5, "slow", "1/1", 18080, "ok", run_id, attempt
    )


def test_the_serving_launch_is_the_running_llama_servers() -> None:
    assert serving_launch([]) is None
    rpc = component("rpc-server", True, 3, 1)  # rpc-servers kept across reloads: older
    assert serving_launch([rpc, component("llama-server", True, 4, 2)]) == (4, 2)
    assert serving_launch([rpc, component("llama-server", False, 4, 2)]) is None
    assert serving_launch([component("llama-server", True, None, None)]) is None  # no metadata


# --- the command: a stand-in llama-server started the way up starts one -------------------

HOSTS = """[cluster]
head = "a"

[hosts.a]
transport = "local"
link_address = "127.0.0.2"
link_interface = "lo"
llama_bin_dir = "{root}/bin"
run_dir = "{root}/run/a"
"""


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """hosts.toml with one local host, and a ``sleep`` running as its llama-server (the
    metadata naming run 1, attempt 2), stopped afterwards."""
    (tmp_path / "hosts.toml").write_text(HOSTS.format(root=tmp_path))
    env = {
        "CLUSTERCTL_CONFIG": str(tmp_path / "hosts.toml"),
        "CLUSTERCTL_STATE_DIR": str(tmp_path / "state"),
    }
    inventory = load_inventory(tmp_path / "hosts.toml")
    host = inventory.hosts["a"]
    meta = {"profile": "slow", "split": "1", "port": 47181, "run_id": 1, "attempt": 2}
    asyncio.run(
        processes.spawn(LocalTransport(host), host.run_dir, "llama-server", ["sleep", "120"], meta)
    )
    try:
        yield env, tmp_path / "state"
    finally:
        asyncio.run(processes.stop(LocalTransport(host), host.run_dir, "llama-server", grace_s=2))


def test_status_shows_the_running_launchs_links(serving: tuple[dict[str, str], Path]) -> None:
    env, state = serving
    run_id = recorded(state, SERVING)
    assert run_id == 1
    result = clusterctl("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    [row] = document["components"]
    assert (row["component"], row["alive"], row["run_id"], row["attempt"]) == (
        "llama-server",
        True,
        1,
        2,
    )
    load = document["load"]
    assert (load["run_id"], load["attempt"], load["load_seconds"]) == (1, 2, 9.84)
    assert [(w["worker"], w["bottleneck"], w["cache_pays"]) for w in load["links"]] == [
        ("bee", "link", True),
        ("cat", "head", False),
        ("dog", "unknown", None),
        ("eel", "too little moved", None),
    ]
    table = clusterctl("status", env=env)
    assert table.returncode == 0, table.stderr
    assert "links during the serving load (run 1, attempt 2, 9.8 s)" in table.stdout
    assert "pays (hash 0.1 s vs send 8.7 s)" in table.stdout


def test_status_says_when_the_record_lacks_the_running_launch(
    serving: tuple[dict[str, str], Path],
) -> None:
    env, _ = serving  # an empty record: run 1 is another state directory's
    document = json.loads(clusterctl("status", "--json", env=env).stdout)
    assert document["load"] is None and document["components"][0]["alive"]
    table = clusterctl("status", env=env)
    assert table.returncode == 0, table.stderr
    assert (
        "links: the serving load (run 1, attempt 2) is not in this state directory's record"
        in table.stdout
    )


def test_a_record_that_cannot_be_read_costs_only_the_link_figures(
    serving: tuple[dict[str, str], Path],
) -> None:
    env, state = serving
    state.mkdir()
    (state / "clusterctl.db").write_text("not a database")
    result = clusterctl("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["load"] is None
    [warning] = result.stderr.strip().splitlines()
    assert warning.startswith("warning: no link figures: ") and "Traceback" not in result.stderr
