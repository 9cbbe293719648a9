"""Fact parsers against recorded outputs (tests/fixtures/facts/*.json).

Each fixture holds the command's real output (or, marked synthetic, one written in the
same format for a state this machine cannot show) and the parse a person expects.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from cluster import facts

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "facts").glob("*.json"))


def _parse(case: dict[str, Any]) -> Any:
    kind = case["fact"]
    if kind == "link":
        return facts.parse_link(case["args"][0], case["exit_status"], case["stdout"])
    if kind == "route":
        return facts.parse_route(
            case["args"][0], case["exit_status"], case["stdout"], case["stderr"]
        )
    if kind == "ping":
        return facts.parse_ping(case["stdout"])
    if kind == "listeners":
        return facts.parse_listeners(case["stdout"])
    raise AssertionError(f"unknown fact {kind}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fact_fixture(path: Path) -> None:
    case = json.loads(path.read_text())
    assert _plain(_parse(case)) == case["expected"]


def test_listener_covers_wildcard_and_exact_only() -> None:
    wildcard = facts.Listener("0.0.0.0", 50052, ())
    exact = facts.Listener("10.0.0.2", 50052, ())
    assert wildcard.covers("10.0.0.2")
    assert exact.covers("10.0.0.2")
    assert not exact.covers("10.0.0.3")
    assert exact.covers("0.0.0.0")


def test_memory_reads_meminfo_and_amdgpu_sysfs() -> None:
    text = (
        "MemTotal:       131072000 kB\nMemFree:         1000 kB\nMemAvailable:   120000000 kB\n"
        "card1 mem_info_gtt_total 120259084288\ncard1 mem_info_gtt_used 1073741824\n"
    )
    memory = facts.parse_memory(text)
    assert memory.total == 131072000 * 1024
    assert memory.available == 120000000 * 1024
    assert memory.gpus == {"card1": {"gtt_total": 120259084288, "gtt_used": 1073741824}}


def test_processes_keep_only_llama_servers() -> None:
    listed = "12 llama-server 10\n13 ggml-rpc-server 11\n14 bash 14\nx junk\n15 rpc-server\n"
    assert facts.parse_processes(listed) == [
        (12, "llama-server", 10),
        (13, "ggml-rpc-server", 11),
        (15, "rpc-server", 0),
    ]


def test_file_sizes_mark_missing_files() -> None:
    assert facts.parse_file_sizes("1024 /m/a.gguf\n- /m/b.gguf\n") == {
        "/m/a.gguf": 1024,
        "/m/b.gguf": None,
    }


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("0.0.0.0", True),
        ("8.8.8.8", True),
        ("10.99.0.2", False),
        ("127.0.0.2", False),
        ("nonsense", True),
    ],
)
def test_rpc_bind_address_policy(address: str, refused: bool) -> None:
    assert facts.is_wildcard_or_public(address) is refused


def test_commands_are_argv_lists_with_arguments_kept_apart() -> None:
    hostile = "x; rm -rf /"
    argv = facts.file_sizes_command([hostile])
    assert argv[-1] == hostile  # passed as one positional argument, never spliced into the script
    assert hostile not in argv[2]


def test_listeners_without_ss_come_from_proc_net_tcp() -> None:
    """Images without iproute2 (the GPU machine): the kernel's tables, in state 0A."""
    text = (
        "# /proc/net/tcp\n"
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 0300007F:C384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   1: 0100007F:4E84 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0\n"
        "   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000001000000:2382 00000000000000000000000000000000:0000 0A\n"
        "   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A\n"
    )
    found = [(listener.address, listener.port) for listener in facts.parse_listeners(text)]
    assert found == [("127.0.0.3", 50052), ("0.0.0.0", 8080), ("::1", 9090), ("*", 22)]
