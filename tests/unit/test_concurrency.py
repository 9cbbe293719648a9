"""Structured concurrency: a failure cancels its siblings and surfaces as itself, and a
host's failure in `down` is that host's result, not the end of the others'."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.concurrency import together
from cluster.config.models import Inventory
from cluster.errors import TransportError
from cluster.orchestration import control, processes
from cluster.transport.pool import HostPool


def test_the_first_failure_cancels_the_siblings_and_is_raised_as_itself() -> None:
    cancelled: list[str] = []

    async def slow(name: str) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        return name

    async def broken() -> str:
        await asyncio.sleep(0.01)
        raise TransportError("bee", "connection lost")

    async def go() -> None:
        await together(slow("evo"), broken(), slow("cat"))

    with pytest.raises(TransportError, match="bee: connection lost"):
        asyncio.run(go())
    assert sorted(cancelled) == ["cat", "evo"]


def test_results_come_in_order() -> None:
    async def after(seconds: float, value: int) -> int:
        await asyncio.sleep(seconds)
        return value

    assert asyncio.run(together(after(0.03, 1), after(0.0, 2), after(0.01, 3))) == [1, 2, 3]


def test_down_reports_an_unreachable_host_and_stops_the_rest(tmp_path: Path) -> None:
    inventory = Inventory.model_validate(
        {
            "cluster": {"head": "evo"},
            "hosts": {
                "evo": {
                    "transport": "local",
                    "link_address": "127.0.0.2",
                    "link_interface": "lo",
                    "llama_bin_dir": "/x",
                    "run_dir": str(tmp_path / "evo"),
                },
                "gone": {
                    "ssh_target": "127.0.0.1",
                    "ssh_port": 1,  # nothing listens: connection refused
                    "connect_timeout_s": 2,
                    "known_hosts": str(tmp_path / "known_hosts"),
                    "link_address": "10.9.9.2",
                    "link_interface": "usb0",
                    "llama_bin_dir": "/x",
                },
            },
        }
    )

    async def go() -> control.DownReport:
        async with HostPool(inventory.hosts.values()) as pool:
            await processes.spawn(
                pool["evo"], inventory.hosts["evo"].run_dir, "llama-server", ["sleep", "300"], {}
            )
            return await control.down(pool, inventory)

    report = asyncio.run(go())
    assert [(o.host, o.name, o.word) for o in report.stopped] == [
        ("evo", "llama-server", "terminated")
    ]
    assert list(report.unreachable) == ["gone"] and "ssh to 127.0.0.1" in report.unreachable["gone"]
