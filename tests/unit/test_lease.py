"""The cluster lease on a head (a local-transport host here): refusals that name the
holder, take-over of a dead holder, and `down` asking a running job to stop."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from cluster.config.models import Inventory
from cluster.errors import EXIT_BUSY, ClusterBusy
from cluster.orchestration import lease
from cluster.orchestration.lease import Holder, hold, parse_state
from cluster.transport.pool import HostPool


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return Inventory.model_validate(
        {
            "cluster": {"head": "evo"},
            "hosts": {
                "evo": {
                    "transport": "local",
                    "link_address": "127.0.0.2",
                    "link_interface": "lo",
                    "llama_bin_dir": "/x",
                    "run_dir": str(tmp_path / "evo"),
                }
            },
        }
    )


def lease_file(inventory: Inventory) -> Path:
    return Path(inventory.head.run_dir) / "cluster.lease"


def write_holder(inventory: Inventory, holder: Holder, age_s: float = 0) -> None:
    path = lease_file(inventory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(holder)))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_a_second_controller_is_refused_naming_the_holder(inventory: Inventory) -> None:
    async def go() -> str:
        async with (
            HostPool(inventory.hosts.values()) as pool,
            hold(pool, inventory, "clusterctl sweep night"),
        ):
            assert lease_file(inventory).is_file()
            try:
                async with hold(pool, inventory, "clusterctl up other"):
                    return "not refused"
            except ClusterBusy as busy:
                return str(busy)

    message = asyncio.run(go())
    assert message.startswith("the cluster is busy: `clusterctl sweep night` (pid ")
    assert f"pid {os.getpid()} on " in message and "holds its lease on evo" in message
    assert ClusterBusy.exit_code == EXIT_BUSY == 8
    assert not lease_file(inventory).exists()  # released on the way out


def test_a_dead_holder_on_this_machine_is_taken_over(inventory: Inventory) -> None:
    dead = replace(Holder.me("clusterctl up old"), pid=2**22 + 7, start_ticks=1)
    write_holder(inventory, dead)
    said: list[str] = []

    async def go() -> None:
        async with (
            HostPool(inventory.hosts.values()) as pool,
            hold(pool, inventory, "clusterctl up new", say=said.append),
        ):
            held = json.loads(lease_file(inventory).read_text())
            assert held["command"] == "clusterctl up new"

    asyncio.run(go())
    assert said == [f"taking over the cluster lease of {dead.describe()}: it is no longer running"]


@pytest.mark.parametrize(("age_s", "busy"), [(3, True), (lease.TTL_S + 5, False)])
def test_another_machines_holder_counts_while_it_renews(
    inventory: Inventory, age_s: float, busy: bool
) -> None:
    remote = replace(Holder.me("clusterctl sweep"), host="laptop", boot_id="other")
    write_holder(inventory, remote, age_s)

    async def go() -> bool:
        async with HostPool(inventory.hosts.values()) as pool:
            try:
                async with hold(pool, inventory, "clusterctl up"):
                    return False
            except ClusterBusy:
                return True

    assert asyncio.run(go()) is busy


def test_down_asks_the_running_job_to_stop_then_takes_the_lease(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "RENEW_S", 0.1)
    events: list[str] = []

    async def job(pool: HostPool, holding: asyncio.Event, stopped: asyncio.Event) -> None:
        async with hold(
            pool,
            inventory,
            "clusterctl sweep night",
            on_stop=lambda who: (events.append(f"stop asked by {who}"), stopped.set()),
        ):
            events.append("job holds")
            holding.set()
            await stopped.wait()  # a real job stops at its next boundary, as on Ctrl-C
            events.append("job stops")

    async def down(pool: HostPool, holding: asyncio.Event) -> None:
        await holding.wait()
        async with hold(
            pool, inventory, "clusterctl down", take_from_jobs=True, say=events.append
        ):
            events.append("down holds")

    async def go() -> None:
        holding = asyncio.Event()
        async with HostPool(inventory.hosts.values()) as pool:
            await asyncio.gather(job(pool, holding, asyncio.Event()), down(pool, holding))

    asyncio.run(go())
    assert events[0] == "job holds"
    assert events[1].startswith("asking `clusterctl sweep night` (pid ")
    assert events[2].startswith("stop asked by `clusterctl down` (pid ")
    assert events[3:] == ["job stops", "down holds"]


def test_parse_state_reads_garbage_as_no_holder() -> None:
    state = parse_state("READ\n12\n\nnot json\n")
    assert (state.verdict, state.age_s, state.holder) == ("READ", 12.0, None)
    assert not state.holder_alive()
    none = parse_state("READ\n-1\n\n")
    assert none.age_s is None and none.holder is None
