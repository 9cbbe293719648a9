"""Detached components on a host, through the local transport: real processes, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from cluster.config.models import HostConfig
from cluster.orchestration import processes
from cluster.transport.local import LocalTransport


@pytest.fixture
def host(tmp_path: Path) -> HostConfig:
    return HostConfig(
        name="a",
        transport="local",
        link_address="127.0.0.2",
        link_interface="lo",
        llama_bin_dir="/x",
        run_dir=str(tmp_path / "run"),
    )


def test_spawn_list_poll_and_stop(host: HostConfig) -> None:
    async def go() -> None:
        t = LocalTransport(host)
        pid = await processes.spawn(
            t, host.run_dir, "svc", ["sh", "-c", "echo ready; exec sleep 60"], {"port": 1}
        )
        await asyncio.sleep(0.3)
        [listed] = await processes.list_managed(t, host.run_dir)
        assert (listed.name, listed.pid, listed.alive, listed.meta) == (
            "svc",
            pid,
            True,
            {"port": 1},
        )
        poll = await processes.poll_log(t, host.run_dir, "svc", 0)
        assert poll.new_text == "ready\n" and poll.alive and poll.exit_status is None
        with pytest.raises(Exception, match="svc already runs"):
            await processes.spawn(t, host.run_dir, "svc", ["true"], {})
        outcome = await processes.stop(t, host.run_dir, "svc", grace_s=5)
        assert outcome.word == "terminated"
        assert await processes.list_managed(t, host.run_dir) == []
        assert (await processes.stop(t, host.run_dir, "svc")).word == "absent"

    asyncio.run(go())


def test_exit_status_of_a_killed_component_is_recorded(host: HostConfig) -> None:
    async def go() -> None:
        t = LocalTransport(host)
        await processes.spawn(t, host.run_dir, "victim", ["sleep", "60"], {})
        await asyncio.sleep(0.2)
        await processes.signal_component(t, host.run_dir, "victim", "KILL")
        await asyncio.sleep(0.3)
        poll = await processes.poll_log(t, host.run_dir, "victim", 0)
        assert not poll.alive and poll.exit_status == 137
        assert (await processes.stop(t, host.run_dir, "victim")).word == "stale"
        assert list(Path(host.run_dir).glob("victim.pid")) == []

    asyncio.run(go())


def test_stopped_and_stubborn_components_are_still_stopped(host: HostConfig) -> None:
    async def go() -> None:
        t = LocalTransport(host)
        await processes.spawn(t, host.run_dir, "frozen", ["sleep", "60"], {})
        await processes.spawn(
            t, host.run_dir, "stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & wait"], {}
        )
        await asyncio.sleep(0.3)
        await processes.signal_component(t, host.run_dir, "frozen", "STOP")
        assert (await processes.stop(t, host.run_dir, "frozen", grace_s=5)).word == "terminated"
        start = time.monotonic()
        assert (await processes.stop(t, host.run_dir, "stubborn", grace_s=1)).word == "killed"
        assert time.monotonic() - start < 8
        assert await processes.list_managed(t, host.run_dir) == []

    asyncio.run(go())


def test_arguments_reach_the_component_verbatim(host: HostConfig) -> None:
    hostile = "$(touch /tmp/pwned); `id` 'quote\" ; rm -rf /"

    async def go() -> str:
        t = LocalTransport(host)
        await processes.spawn(t, host.run_dir, "echo", ["printf", "%s", hostile], {"note": hostile})
        await asyncio.sleep(0.3)
        return (await processes.poll_log(t, host.run_dir, "echo", 0)).new_text

    assert asyncio.run(go()) == hostile


def test_logs_follow_streams_new_lines(host: HostConfig) -> None:
    from cluster.orchestration import control
    from cluster.transport.pool import HostPool

    async def go() -> list[str]:
        async with HostPool([host]) as pool:
            await processes.spawn(
                pool["a"],
                host.run_dir,
                "rpc-server",
                ["sh", "-c", "echo one; sleep 0.5; echo two; sleep 0.5; echo three; sleep 30"],
                {},
            )
            seen: list[str] = []
            async with contextlib.aclosing(control.follow(pool, host, "rpc-server", 10)) as lines:
                async for line in lines:
                    seen.append(line)
                    if line == "three":
                        break
            await processes.stop(pool["a"], host.run_dir, "rpc-server")
            return seen

    assert asyncio.run(asyncio.wait_for(go(), 20)) == ["one", "two", "three"]
