"""Where a load's time goes: link counters, throughput against capacity, the verdicts.

The counters are read for real from this machine's ``lo`` through the local transport;
the verdicts are checked on the figures of real links (1 GbE, USB4, loopback).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from cluster.config.models import HostConfig
from cluster.orchestration.linkstats import (
    HASH_BYTES_PER_S,
    Bottleneck,
    Capacity,
    Counters,
    LinkLoad,
    LoadTraffic,
    counters_command,
    link_load,
    link_loads,
    parse_counters,
    read_counters,
    shared,
    workers,
)
from cluster.store import Store, Throughput
from cluster.transport.pool import HostPool

GB = 10**9


def host(name: str, interface: str = "tb0", transport: str = "ssh", address: str = "10.0.0.2") -> HostConfig:
    return HostConfig(
        name=name,
        transport=transport,  # type: ignore[arg-type]
        link_address=address,  # type: ignore[arg-type]
        link_interface=interface,
        llama_bin_dir="/opt/llama",
    )


def load(bytes_: int, seconds: float, capacity_gbit: float | None) -> LinkLoad:
    return LinkLoad(
        worker="bee",
        interface="tb0",
        rx_bytes=bytes_,
        tx_bytes=bytes_ // 50,  # acknowledgements
        seconds=seconds,
        capacity_bps=capacity_gbit * 1e9 if capacity_gbit is not None else None,
    )


# --- command and parser ----------------------------------------------------------------


def test_counters_command_reads_both_counters() -> None:
    assert counters_command("thunderbolt0") == [
        "cat",
        "/sys/class/net/thunderbolt0/statistics/rx_bytes",
        "/sys/class/net/thunderbolt0/statistics/tx_bytes",
    ]


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("156565710\n156565710\n", Counters(156565710, 156565710)),  # lo, as cat prints it
        ("0\n18446744073709551615\n", Counters(0, 2**64 - 1)),
        ("", None),  # the interface does not exist: cat prints nothing on stdout
        ("12\n", None),
        ("12\nx\n", None),
        ("1\n2\n3\n", None),
    ],
)
def test_parse_counters(stdout: str, expected: Counters | None) -> None:
    assert parse_counters(stdout) == expected


# --- one load's record -----------------------------------------------------------------


def test_link_load_is_the_difference_over_the_load() -> None:
    found = link_load("bee", "tb0", Counters(100, 5000), Counters(300, 2_005_000), 2.0, 1e9)
    assert found is not None
    assert (found.rx_bytes, found.tx_bytes, found.bytes) == (200, 2_000_000, 2_000_000)
    assert found.throughput_bps == pytest.approx(8e6)
    assert found.utilisation == pytest.approx(0.008)
    # A reset interface counts as nothing moved; a missing reading gives no record.
    reset = link_load("bee", "tb0", Counters(500, 500), Counters(10, 10), 1.0)
    assert reset is not None and reset.bytes == 0
    assert link_load("bee", "tb0", None, Counters(1, 1), 1.0) is None
    assert link_load("bee", "tb0", Counters(1, 1), None, 1.0) is None
    assert link_load("bee", "tb0", Counters(1, 1), Counters(2, 2), 0.0) is None


def test_a_full_1gbe_link_is_the_bottleneck_and_the_cache_pays() -> None:
    # 69 GB to bee over 1 GbE (0.94 Gbit/s measured) in 600 s: 0.92 Gbit/s.
    found = load(69 * GB, 600.0, 0.94)
    assert found.utilisation == pytest.approx(0.979, abs=0.001)
    assert found.bottleneck is Bottleneck.LINK
    assert found.hash_s == pytest.approx(69 * GB / HASH_BYTES_PER_S)
    assert found.transfer_s == pytest.approx(69 * 8 / 0.94)
    assert found.cache_pays is True
    assert found.describe() == (
        "bee: 69 GB in 600.0 s, 0.92 Gbit/s of 0.94 Gbit/s (98%): the link is the "
        "bottleneck; the rpc-server cache pays (hash 76.7 s vs transfer 587.2 s)"
    )


def test_a_usb4_link_half_used_is_the_heads_doing_and_hashing_costs_more() -> None:
    # MiniMax Q8's bee half (74 GB) in 190 s over USB4 (9.4 Gbit/s): 3.1 Gbit/s, 33%.
    found = load(74 * GB, 190.0, 9.4)
    assert found.bottleneck is Bottleneck.HEAD
    assert found.cache_pays is False  # 82 s of hashing against 63 s of sending
    assert "the head (read, hash, send) is the bottleneck" in found.verdict()
    assert "cache does not pay (hash 82.2 s vs transfer 63.0 s)" in found.verdict()


@pytest.mark.parametrize(
    ("gbit", "bottleneck"),
    [(1.0 / 0.79, Bottleneck.UNCLEAR), (1.0 / 0.8, Bottleneck.LINK), (2.01, Bottleneck.HEAD)],
)
def test_thresholds(gbit: float, bottleneck: Bottleneck) -> None:
    # 1 Gbit/s effective against the capacity given.
    assert load(GB // 8 * 10, 10.0, gbit).bottleneck is bottleneck


def test_more_than_the_capacity_says_it_is_out_of_date() -> None:
    # Measured while the link was limited to 100 Mbit/s; the load ran at 1 Gbit/s.
    found = load(GB // 8 * 2, 1.0, 0.0956)
    assert found.bottleneck is Bottleneck.STALE
    assert "more than the measured capacity: measure it again" in found.verdict()
    assert load(GB // 8, 1.0, 0.85).bottleneck is Bottleneck.LINK  # headers: not stale


def test_without_capacity_or_with_little_moved_there_is_no_verdict() -> None:
    unknown = load(10 * GB, 10.0, None)
    assert unknown.bottleneck is Bottleneck.UNKNOWN
    assert (unknown.utilisation, unknown.transfer_s, unknown.cache_pays) == (None, None, None)
    assert unknown.verdict() == "link capacity unknown (clusterctl health --throughput)"
    assert unknown.describe() == (
        "bee: 10 GB in 10.0 s, 8 Gbit/s: link capacity unknown (clusterctl health --throughput)"
    )
    tiny = load(1_600_000, 0.2, 1.0)  # the testbed's tiny model
    assert tiny.bottleneck is Bottleneck.TOO_LITTLE
    assert tiny.verdict() == "too little moved to judge"


def test_record_round_trips_through_json() -> None:
    found = load(3 * GB, 12.5, 9.4)
    assert LinkLoad.model_validate_json(found.model_dump_json()) == found


# --- which hosts, and reading them ---------------------------------------------------------


def test_workers_are_the_rpc_hosts_but_the_head() -> None:
    evo, bee, cat = host("evo"), host("bee"), host("cat")
    assert [h.name for h in workers([evo, bee, cat], "evo")] == ["bee", "cat"]
    assert [h.name for h in workers([bee], "evo")] == ["bee"]


def test_local_hosts_on_one_interface_share_its_counters() -> None:
    a = host("a", "lo", "local", "127.0.0.2")
    b = host("b", "lo", "local", "127.0.0.3")
    c = host("c", "eth1", "local", "127.0.0.4")
    remote = host("d", "lo")
    assert shared(b, [a, b, c, remote])
    assert not shared(c, [a, b, c, remote])
    assert not shared(remote, [a, b, c, remote])  # an ssh host is another machine
    assert not shared(b, [b])


def send_over_lo(size: int) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            peer, _ = server.accept()
            client.sendall(b"x" * size)
            received = 0
            while received < size:
                received += len(peer.recv(1 << 16))
            peer.close()


def test_load_traffic_measures_the_workers_against_the_recorded_capacity(tmp_path: Path) -> None:
    head = host("a", "lo", "local", "127.0.0.2")
    b = host("b", "lo", "local", "127.0.0.3")
    c = host("c", "lo", "local", "127.0.0.4")

    async def go(store: Store) -> list[LinkLoad]:
        async with HostPool([head, b, c]) as pool:
            traffic = LoadTraffic(pool, [head, b, c], [head, b, c], "a")
            await traffic.start()
            send_over_lo(2_000_000)
            return await traffic.finish(0.5, store)

    with Store(tmp_path) as store:
        store.record_throughput(Throughput(head="a", worker="b", bps=1e9, at=50.0))
        store.record_throughput(Throughput(head="c", worker="b", bps=5.0, at=60.0))
        loads = asyncio.run(go(store))
    assert [load.worker for load in loads] == ["b", "c"]  # not the head's own
    assert all(load.shared and load.bytes >= 2_000_000 for load in loads)
    assert (loads[0].capacity_bps, loads[0].capacity_at) == (1e9, 50.0)
    assert loads[1].capacity_bps is None
    assert loads[0].throughput_bps >= 32e6


def test_read_counters_from_a_real_interface_and_a_missing_one() -> None:
    lo = host("a", "lo", "local", "127.0.0.2")
    missing = host("b", "nosuch0", "local", "127.0.0.3")

    async def go() -> tuple[dict[str, Counters | None], dict[str, Counters | None]]:
        async with HostPool([lo, missing]) as pool:
            before = await read_counters(pool, [lo, missing])
            send_over_lo(1_000_000)
            return before, await read_counters(pool, [lo, missing])

    before, after = asyncio.run(go())
    assert before["b"] is None and after["b"] is None
    first, second = before["a"], after["a"]
    assert first is not None and second is not None
    assert second.rx - first.rx >= 1_000_000  # every byte sent over lo is received on it
    [found] = link_loads([lo, missing], [lo, missing], before, after, 1.0, {"a": Capacity(4e10, 5.0)})
    assert found.worker == "a" and found.bytes >= 1_000_000
    assert (found.capacity_bps, found.capacity_at, found.shared) == (4e10, 5.0, False)
