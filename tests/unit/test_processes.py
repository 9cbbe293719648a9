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


# --- pid files that are empty, truncated or garbage --------------------------------------

INVALID_PID_FILES = {
    "empty": "",
    "newline only": "\n",
    "truncated": "4242",
    "truncated with space": "4242 ",
    "garbage": "not a pid\n",
    "start time not a number": "4242 soon\n",
    "three fields": "4242 100 7\n",
    "pid 1": "1 100\n",
    "pid 0": "0 100\n",
    "leading zero": "0042 100\n",
    "negative": "-42 100\n",
    "huge": "99999999999999999999 100\n",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("content", INVALID_PID_FILES.values(), ids=INVALID_PID_FILES.keys())
def test_an_invalid_pid_file_is_listed_stopped_and_replaced(host: HostConfig, content: str) -> None:
    run_dir = Path(host.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "svc.pid").write_text(content)
    (run_dir / "svc.json").write_text('{"port": 1}')

    async def go() -> None:
        t = LocalTransport(host)
        [listed] = await processes.list_managed(t, host.run_dir)
        assert (listed.name, listed.pid, listed.state, listed.alive, listed.invalid) == (
            "svc",
            0,
            processes.INVALID,
            False,
            True,
        )
        assert listed.meta == {"port": 1}
        poll = await processes.poll_log(t, host.run_dir, "svc", 0)
        assert (poll.state, poll.alive, poll.exit_status) == ("dead", False, None)
        # spawn replaces an invalid record instead of refusing or failing on it
        pid = await processes.spawn(t, host.run_dir, "svc", ["sleep", "60"], {})
        assert (run_dir / "svc.pid").read_text().split()[0] == str(pid)
        assert (await processes.stop(t, host.run_dir, "svc", grace_s=5)).word == "terminated"
        (run_dir / "svc.pid").write_text(content)
        assert (await processes.stop(t, host.run_dir, "svc")).word == "invalid"
        assert not (run_dir / "svc.pid").exists() and not (run_dir / "svc.json").exists()

    asyncio.run(go())


def test_a_garbled_exit_file_is_no_exit_status(host: HostConfig) -> None:
    run_dir = Path(host.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "svc.exit").write_text("1 2\nthree\n")

    async def go() -> processes.LogPoll:
        return await processes.poll_log(LocalTransport(host), host.run_dir, "svc", 0)

    poll = asyncio.run(go())
    assert (poll.size, poll.state, poll.exit_status, poll.new_text) == (0, "dead", None, "")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('svc\t4242\tS\t17\t{"port": 1}', ("svc", 4242, "S", 17, {"port": 1})),
        ("svc\t4242\tdead\t0\t{}", ("svc", 4242, "dead", 0, {})),
        ("svc\t-\tinvalid\t0\t{}", ("svc", 0, "invalid", 0, {})),
        ("svc\t\tdead\t0\t{}", ("svc", 0, "invalid", 0, {})),
        ("svc\tabc\tdead\t0\t{}", ("svc", 0, "invalid", 0, {})),
        ("svc\t²\tS\t0\t{}", ("svc", 0, "invalid", 0, {})),
        ("svc\t4242\tS\t\t{}", ("svc", 4242, "S", 0, {})),
        ("svc\t4242\tS\tsoon\t{}", ("svc", 4242, "S", 0, {})),
        ("svc\t4242\tS\t1\tnot json", ("svc", 4242, "S", 1, {})),
        ("svc\t4242\tS\t1\t[1, 2]", ("svc", 4242, "S", 1, {})),
        ('svc\t4242\tS\t1\t{"a":\t1}', ("svc", 4242, "S", 1, {"a": 1})),
    ],
)
def test_parse_listing(line: str, expected: tuple[object, ...]) -> None:
    [record] = processes.parse_listing("h", line + "\n")
    assert (record.name, record.pid, record.state, record.uptime_s, record.meta) == expected
    assert record.host == "h"


def test_parse_listing_skips_lines_without_their_fields() -> None:
    stdout = "half a name\nsvc\t1\nok\t4242\tS\t1\t{}\n\n\t4242\tS\t1\t{}\n"
    assert [r.name for r in processes.parse_listing("h", stdout)] == ["ok"]


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("120 S -\nhello\n", (120, "S", None, "hello\n")),
        ("120 dead 137\n", (120, "dead", 137, "")),
        ("0 dead -1\n", (0, "dead", -1, "")),
        ("0 dead --1\n", (0, "dead", None, "")),
        ("0 dead 1-2\n", (0, "dead", None, "")),
        ("", (0, "dead", None, "")),
        ("oops\n", (0, "dead", None, "")),
        ("x y z w\nlog", (0, "y", None, "log")),
    ],
)
def test_parse_poll(stdout: str, expected: tuple[object, ...]) -> None:
    poll = processes.parse_poll(stdout)
    assert (poll.size, poll.state, poll.exit_status, poll.new_text) == expected
