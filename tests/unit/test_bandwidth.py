"""Bytes read per generated token, and a split's memory-bandwidth peak, from GGUF headers.

The dense and mixture-of-experts models are generated (cluster.testbed.models) and read
the way the controller reads a remote model: from header prefixes only. The expected
figures are computed by hand from the generator's shapes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cluster.config.models import Inventory, Profile
from cluster.config.resolve import Device
from cluster.llamacpp.gguf_info import ModelInfo, header_extent, info_from_headers
from cluster.measure.bandwidth import (
    DeviceShare,
    TokenTraffic,
    format_gb,
    layer_token_bytes,
    token_bytes,
    token_traffic,
    traffic_for,
)
from cluster.report.bandwidth import fraction_text
from cluster.testbed.models import TINY, TINY_MOE, build_vocab, write_model

N_VOCAB = len(build_vocab().tokens)
EMBD = 128
ROW = EMBD * 2  # one f16 row of the token embedding
ATTN = 2 * EMBD * 4 + 2 * (EMBD * EMBD + 2 * 64 * EMBD + EMBD * EMBD)  # norms + q, k, v, o
DENSE_LAYER = ATTN + 2 * 3 * 256 * EMBD
EXPERTS = 8 * 2 * 3 * 256 * EMBD  # 8 experts of gate, up, down (f16)
ROUTER = 8 * EMBD * 4  # f32
MOE_LAYER = ATTN + ROUTER + EXPERTS
OUTPUT = N_VOCAB * EMBD * 2 + EMBD * 4
DENSE_TOKEN = 4 * DENSE_LAYER + OUTPUT + ROW
MOE_TOKEN = 4 * (ATTN + ROUTER + EXPERTS * 2 // 8) + OUTPUT + ROW


def _from_headers(files: list[Path]) -> ModelInfo:
    headers = []
    for path in files:
        data = path.read_bytes()
        headers.append((str(path), data[: header_extent(data)], len(data)))
    return info_from_headers(headers)


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return _from_headers(write_model(TINY, tmp_path_factory.mktemp("dense") / "d.gguf"))


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return _from_headers(write_model(TINY_MOE, tmp_path_factory.mktemp("moe") / "m.gguf"))


def _devices(split: list[float], hosts: tuple[str, ...] = ("a", "b")) -> list[Device]:
    return [
        Device(host=h, label=f"RPC{i}", proportion=p)
        for i, (h, p) in enumerate(zip(hosts, split, strict=True))
    ]


# --- what the header says -------------------------------------------------------------


def test_dense_header_has_no_experts_and_an_embedding_row(dense: ModelInfo) -> None:
    assert (dense.expert_count, dense.expert_used_count, dense.is_moe) == (0, 0, False)
    assert dense.layer_expert_bytes == []
    assert (dense.token_embd_rows, dense.token_embd_row_bytes) == (N_VOCAB, ROW)
    assert dense.token_embd_bytes == N_VOCAB * ROW


def test_moe_header_has_expert_bytes_per_layer(moe: ModelInfo) -> None:
    assert (moe.expert_count, moe.expert_used_count, moe.is_moe) == (8, 2, True)
    assert moe.layer_expert_bytes == [EXPERTS] * 4
    assert moe.layer_bytes == [MOE_LAYER] * 4  # the router is shared, not an expert


def test_sharded_moe_reads_the_same(moe: ModelInfo, tmp_path: Path) -> None:
    files = write_model(replace(TINY_MOE, shards=3), tmp_path / "m.gguf")
    assert len(files) == 3
    sharded = _from_headers(files)
    assert sharded.layer_expert_bytes == moe.layer_expert_bytes
    assert sharded.token_embd_row_bytes == ROW


# --- bytes per token ---------------------------------------------------------------------


def test_dense_token_reads_every_layer_the_output_and_one_row(dense: ModelInfo) -> None:
    assert layer_token_bytes(dense) == [DENSE_LAYER] * 4
    assert token_bytes(dense) == DENSE_TOKEN
    # Every tensor once, except the embedding matrix, of which a token reads one row.
    assert token_bytes(dense) == dense.total_bytes - dense.token_embd_bytes + ROW


def test_moe_token_reads_the_used_fraction_of_experts(moe: ModelInfo) -> None:
    assert layer_token_bytes(moe) == [ATTN + ROUTER + EXPERTS / 4] * 4
    assert token_bytes(moe) == MOE_TOKEN
    all_experts = replace(moe, expert_used_count=8)
    assert token_bytes(all_experts) == 4 * MOE_LAYER + OUTPUT + ROW


def test_tied_output_is_read_whole(dense: ModelInfo) -> None:
    tied = replace(dense, output_bytes=dense.token_embd_bytes + EMBD * 4, tied_output=True)
    assert token_bytes(tied) == 4 * DENSE_LAYER + N_VOCAB * ROW + EMBD * 4 + ROW


def test_dense_layer_of_a_moe_model_is_read_whole(moe: ModelInfo) -> None:
    # Leading dense layers (DeepSeek-style): no routed experts there.
    mixed = replace(moe, layer_expert_bytes=[0, EXPERTS, EXPERTS, EXPERTS])
    assert layer_token_bytes(mixed)[0] == MOE_LAYER
    assert layer_token_bytes(mixed)[1] == ATTN + ROUTER + EXPERTS / 4


# --- per device and the split's peak -------------------------------------------------------


def test_shares_follow_llamacpp_placement(dense: ModelInfo) -> None:
    # 4 layers split 1/1 go [a, a, a, b] and the output to b; the row stays on the CPU.
    traffic = token_traffic(dense, _devices([1, 1]), 99, "head", {"a": 100.0, "b": 200.0})
    assert [(d.host, d.label, d.bytes) for d in traffic.devices] == [
        ("a", "RPC0", 3 * DENSE_LAYER),
        ("b", "RPC1", DENSE_LAYER + OUTPUT),
        ("head", "CPU", ROW),
    ]
    assert traffic.bytes_per_token == DENSE_TOKEN
    floor = 3 * DENSE_LAYER / 100e9 + (DENSE_LAYER + OUTPUT) / 200e9
    assert traffic.floor_s == pytest.approx(floor)
    assert traffic.peak_gbs == pytest.approx(DENSE_TOKEN / floor / 1e9)
    assert traffic.ceiling_tps == pytest.approx(1 / floor)
    # The head without a figure: its embedding row is negligible, not unknown.
    assert traffic.unknown_hosts == []


def test_peak_is_between_the_slowest_and_fastest_device(moe: ModelInfo) -> None:
    traffic = token_traffic(moe, _devices([1, 1]), 99, "a", {"a": 256.0, "b": 4800.0})
    assert traffic.peak_gbs is not None
    assert 256.0 < traffic.peak_gbs < 4800.0
    same = token_traffic(moe, _devices([1, 1]), 99, "a", {"a": 256.0, "b": 256.0})
    assert same.peak_gbs == pytest.approx(256.0)
    assert (same.expert_count, same.expert_used_count) == (8, 2)


def test_layers_left_on_the_cpu_are_the_heads(dense: ModelInfo) -> None:
    # -ngl 3: the output and the last two layers are offloaded; layers 0 and 1 stay.
    traffic = token_traffic(dense, _devices([1, 1]), 3, "head", {"a": 100.0, "b": 100.0})
    assert traffic.devices[2].bytes == 2 * DENSE_LAYER + ROW
    assert traffic.unknown_hosts == ["head"]
    assert traffic.floor_s is None and traffic.peak_gbs is None
    assert traffic.fraction(10.0) is None
    assert "peak unknown (no memory_bandwidth_gbs for head)" in traffic.describe()


def test_effective_bandwidth_and_fraction() -> None:
    traffic = TokenTraffic(
        bytes_per_token=10 * 10**9,
        devices=[
            DeviceShare(host="evo", label="RPC0", bytes=6 * 10**9, bandwidth_gbs=256.0),
            DeviceShare(host="bee", label="RPC1", bytes=4 * 10**9, bandwidth_gbs=256.0),
        ],
    )
    assert traffic.effective_gbs(12.8) == pytest.approx(128.0)
    assert traffic.fraction(12.8) == pytest.approx(0.5)
    assert traffic.ceiling_tps == pytest.approx(25.6)
    assert traffic.utilisation_text(12.8) == "128 GB/s, 50% of 256 GB/s"
    assert traffic.describe() == "10 GB per token; peak 256 GB/s for this split"
    unknown = traffic.model_copy(
        update={"devices": [d.model_copy(update={"bandwidth_gbs": None}) for d in traffic.devices]}
    )
    assert unknown.utilisation_text(12.8) == "128 GB/s, peak unknown"
    assert unknown.unknown_hosts == ["bee", "evo"]


def test_past_the_peak_says_a_bandwidth_figure_is_too_low() -> None:
    """The GPU run: a CPU host's memory_bandwidth_gbs from a one-thread copy read 331%."""
    traffic = TokenTraffic(
        bytes_per_token=10 * 10**9,
        devices=[DeviceShare(host="cpu", label="RPC0", bytes=10 * 10**9, bandwidth_gbs=20.0)],
    )
    assert traffic.utilisation_text(2.1) == "21 GB/s, 105% of 20 GB/s"  # within noise
    assert traffic.utilisation_text(6.6) == (
        "66 GB/s, 330% of 20 GB/s: above the peak, so a host's memory_bandwidth_gbs is set too low"
    )
    assert fraction_text(3.3, 66.0) == "330% >peak" and fraction_text(1.05, 21.0) == "105%"


def test_record_round_trips_through_json(moe: ModelInfo) -> None:
    traffic = token_traffic(moe, _devices([1.2, 0.8]), 99, "a", {"a": 256.0, "b": None})
    assert TokenTraffic.model_validate_json(traffic.model_dump_json()) == traffic


def test_traffic_for_reads_host_settings(dense: ModelInfo) -> None:
    inventory = Inventory.model_validate(
        {
            "cluster": {"head": "evo"},
            "hosts": {
                name: {
                    "link_address": address,
                    "link_interface": "tb0",
                    "llama_bin_dir": "/opt/llama",
                    "memory_bandwidth_gbs": 256,
                }
                for name, address in (("evo", "10.0.0.1"), ("bee", "10.0.0.2"))
            },
        }
    )
    profile = Profile(name="p", model="/m.gguf", rpc_hosts=["evo", "bee"], tensor_split=[1, 1])
    traffic = traffic_for(dense, inventory, profile, [3, 1])
    assert [d.host for d in traffic.devices] == ["evo", "bee", "evo"]
    assert traffic.peak_gbs == pytest.approx(256.0, rel=1e-3)


def test_format_gb() -> None:
    assert [format_gb(n) for n in (12, 12_300, 320e6, 1.844e9)] == [
        "12 B",
        "12.3 kB",
        "320 MB",
        "1.84 GB",
    ]
