"""Spawn and stop racing on one host: a stop never loses a process another controller
just started (the orphan a `down` during a sweep's reload used to leave), and a server that
outlived its container wrapper is stopped by its port. Real processes, local transport."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest

from cluster.config.models import HostConfig
from cluster.orchestration import processes
from cluster.transport.local import LocalTransport

NAME = "llama-server"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def leader_children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


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


def test_down_during_a_reload_never_orphans_the_new_server(host: HostConfig) -> None:
    """A sweep reloads (stop, then spawn) while `down` stops: 20 rounds, racing for real."""
    transport = LocalTransport(host)
    # Like llama-server, it takes a moment to exit after SIGTERM.
    argv = ["sh", "-c", 'trap "sleep 0.3; exit 0" TERM; sleep 300 & wait']
    started: list[int] = []

    async def reload() -> None:
        await processes.stop(transport, host.run_dir, NAME, grace_s=2)
        started.append(await processes.spawn(transport, host.run_dir, NAME, argv, {}))

    async def down(offset: float) -> None:
        await asyncio.sleep(offset)  # a different phase of the stop's 0.1 s polling each round
        await processes.stop(transport, host.run_dir, NAME, grace_s=2)

    async def rounds() -> list[str]:
        problems = []
        for number in range(20):
            started.append(await processes.spawn(transport, host.run_dir, NAME, argv, {}))
            await asyncio.gather(reload(), down((number % 10) / 100))
            pid_file = Path(host.run_dir) / f"{NAME}.pid"
            recorded = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
            running = [pid for pid in started if alive(pid)]
            if any(pid != recorded for pid in running):
                problems.append(f"round {number}: running {running}, pid file {recorded}")
            await processes.stop(transport, host.run_dir, NAME, grace_s=2)
            if [pid for pid in started if alive(pid)]:
                problems.append(f"round {number}: a process survived the final stop")
        return problems

    try:
        assert asyncio.run(rounds()) == []
    finally:
        for pid in started:
            if alive(pid):
                os.killpg(pid, 9)


def test_the_lock_is_not_inherited_by_the_component(host: HostConfig) -> None:
    """A running component must not hold the host's lock, or every later stop would wait."""
    transport = LocalTransport(host)

    async def go() -> str:
        await processes.spawn(transport, host.run_dir, NAME, ["sleep", "300"], {})
        other = await processes.spawn(transport, host.run_dir, "rpc-server", ["sleep", "300"], {})
        assert other > 0  # the second spawn got the lock
        words = [
            (await processes.stop(transport, host.run_dir, name, grace_s=2)).word
            for name in (NAME, "rpc-server")
        ]
        return " ".join(words)

    assert asyncio.run(go()) == "terminated terminated"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# A container client that neither forwards signals nor shares the server's session: the
# server lives on when the wrapper is killed (as with `podman exec` / `toolbox run`).
FAKE_CONTAINER = ["sh", "-c", 'trap "" TERM INT HUP; setsid "$@" & wait $!', "fakebox"]


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_a_server_that_outlives_its_container_wrapper_is_stopped_by_its_port(
    host: HostConfig,
) -> None:
    transport = LocalTransport(host)
    port = free_port()
    server = ["python3", "-c", LISTENER, str(port)]

    async def go() -> tuple[processes.StopOutcome, int]:
        leader = await processes.spawn(
            transport, host.run_dir, NAME, [*FAKE_CONTAINER, *server], {"port": port}
        )
        for _ in range(100):
            await asyncio.sleep(0.05)
            if listening(port):
                break
        inner = real_server(leader)
        return await processes.stop(transport, host.run_dir, NAME, grace_s=1), inner

    outcome, inner = asyncio.run(go())
    assert outcome.word == "killed-inside" and not outcome.survived
    assert not alive(inner) and not listening(port)
    assert not (Path(host.run_dir) / f"{NAME}.pid").exists()


LISTENER = (
    "import signal, socket, sys, time\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "time.sleep(300)\n"
)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def real_server(leader: int) -> int:
    """The listener under the fake container: the wrapper's child's child, in its own session."""
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            cmdline = (pid / "cmdline").read_bytes()
        except OSError:
            continue
        if b"socket.socket()" in cmdline and os.getsid(int(pid.name)) != leader:
            return int(pid.name)
    raise AssertionError("the listener is not running")


def test_local_components_get_a_login_environment_not_the_controllers(
    host: HostConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-controller-secret")
    transport = LocalTransport(host)

    async def go() -> str:
        await processes.spawn(transport, host.run_dir, "env", ["env"], {})
        for _ in range(100):
            poll = await processes.poll_log(transport, host.run_dir, "env", 0)
            if not poll.alive:
                return poll.new_text
            await asyncio.sleep(0.05)
        raise AssertionError("env did not finish")

    printed = asyncio.run(go())
    assert "sk-controller-secret" not in printed
    assert f"HOME={Path.home()}" in printed and "PATH=" in printed


def test_a_cancelled_local_command_kills_its_child(host: HostConfig, tmp_path: Path) -> None:
    transport = LocalTransport(host)
    marker = tmp_path / "child.pid"

    async def go() -> None:
        task = asyncio.ensure_future(
            transport.run(["sh", "-c", f'echo $$ > "{marker}"; exec sleep 300'], timeout=None)
        )
        for _ in range(250):  # until the child has written its pid
            if marker.exists() and marker.read_text().strip():
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not alive(int(marker.read_text()))
