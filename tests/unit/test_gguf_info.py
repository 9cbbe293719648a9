"""GGUF model knowledge: metadata, header-only parsing, layer placement, memory estimates.

Models are generated at test time (cluster.testbed.models). Placement cases are checked
against llama.cpp's own assignment, as seen in real load logs of both builds; the last
test loads a tiny model split over two real rpc-servers and compares llama.cpp's model
buffer sizes with the estimate.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import pytest

from cluster.config.resolve import Device
from cluster.llamacpp.gguf_info import (
    DEFAULT_COMPUTE_BYTES,
    GiB,
    MiB,
    ModelFileError,
    ModelInfo,
    NeedMoreHeader,
    assign_layers,
    assign_output,
    estimate_devices,
    estimate_memory,
    fit_report,
    format_bytes,
    header_extent,
    header_sparse_copy,
    info_from_headers,
    kv_cache_bytes,
    kv_cache_layer_bytes,
    kv_cells,
    parse_shard_name,
    read_model_info,
    shard_names,
)
from cluster.testbed.models import TINY, TinyModelSpec, build_vocab, cached_model, write_model

SHARDED = TinyModelSpec(name="tiny-sharded", shards=3)

# Hand-computed sizes of TINY (f16 matrices, f32 norms, 756-token vocabulary).
N_VOCAB = len(build_vocab().tokens)
LAYER_BYTES = 2 * 128 * 4 + 2 * (128 * 128 + 2 * 64 * 128 + 128 * 128) + 2 * 3 * 256 * 128
INPUT_BYTES = N_VOCAB * 128 * 2
OUTPUT_BYTES = N_VOCAB * 128 * 2 + 128 * 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny_files(model_dir: Path) -> list[Path]:
    return write_model(TINY, model_dir / "tiny.gguf")


@pytest.fixture(scope="module")
def sharded_files(model_dir: Path) -> list[Path]:
    return write_model(SHARDED, model_dir / "sharded.gguf")


@pytest.fixture(scope="module")
def tiny_info(tiny_files: list[Path]) -> ModelInfo:
    return read_model_info(tiny_files)


# --- generated models and read_model_info ---------------------------------------------


def test_tiny_model_info(tiny_info: ModelInfo, tiny_files: list[Path]) -> None:
    info = tiny_info
    assert (info.architecture, info.name) == ("llama", "tiny-llama")
    assert (info.n_layer, info.n_embd, info.n_head, info.n_head_kv) == (4, 128, 4, 2)
    assert (info.head_dim_k, info.head_dim_v, info.n_ctx_train) == (32, 32, 8192)
    assert info.n_vocab == N_VOCAB
    assert info.layer_bytes == [LAYER_BYTES] * 4
    assert (info.input_bytes, info.output_bytes) == (INPUT_BYTES, OUTPUT_BYTES)
    assert info.total_bytes == 4 * LAYER_BYTES + INPUT_BYTES + OUTPUT_BYTES
    assert info.shard_count == 1 and info.shard_names == ["tiny.gguf"]
    assert info.file_sizes == [tiny_files[0].stat().st_size]
    assert info.file_bytes > info.total_bytes
    assert not info.tied_output


def test_sharded_model_has_llamacpp_names_and_keys(sharded_files: list[Path]) -> None:
    assert [f.name for f in sharded_files] == [f"sharded-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for index, path in enumerate(sharded_files):
        reader = gguf.GGUFReader(path)
        assert reader.fields["split.no"].contents() == index
        assert reader.fields["split.count"].contents() == 3
        assert reader.fields["split.tensors.count"].contents() == TINY.n_tensors()


def test_sharded_info_equals_single_file_info(
    sharded_files: list[Path], tiny_info: ModelInfo
) -> None:
    info = read_model_info(sharded_files)
    assert info.shard_count == 3
    assert info.shard_names == [f.name for f in sharded_files]
    assert info.file_sizes == [f.stat().st_size for f in sharded_files]
    assert info.layer_bytes == tiny_info.layer_bytes
    assert (info.input_bytes, info.output_bytes) == (tiny_info.input_bytes, tiny_info.output_bytes)
    assert info.total_bytes == tiny_info.total_bytes


def test_first_shard_alone_finds_the_others(sharded_files: list[Path]) -> None:
    assert read_model_info(sharded_files[:1]) == read_model_info(sharded_files)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    files = write_model(SHARDED, tmp_path / "m.gguf")
    files[2].unlink()
    with pytest.raises(ModelFileError, match=r"m-00003-of-00003\.gguf"):
        read_model_info(files[:1])


@pytest.mark.parametrize("shards", [2, 3, 4, 5, 7])
def test_write_model_makes_exactly_the_requested_shards(tmp_path: Path, shards: int) -> None:
    files = write_model(TinyModelSpec(shards=shards), tmp_path / "m.gguf")
    assert len(files) == shards and all(f.is_file() for f in files)
    assert read_model_info(files).total_bytes == 4 * LAYER_BYTES + INPUT_BYTES + OUTPUT_BYTES


def test_vocab_has_controls_bytes_and_word_prefixes() -> None:
    vocab = build_vocab()
    assert vocab.tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert vocab.tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(vocab.types[3:259]) == {int(gguf.TokenType.BYTE)}
    for piece in ("\u2581the", "\u2581opt", "\u2581context", "token", "\u2581conte", "7"):
        assert piece in vocab.tokens
    assert vocab.tokens[vocab.im_end_id] == "<|im_end|>"
    assert len(set(vocab.tokens)) == len(vocab.tokens)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_embd": 100, "n_head": 3},
        {"n_head": 4, "n_head_kv": 3},
        {"shards": 0},
        {"dtype": "q4"},
        {"n_expert": 4, "n_expert_used": 0},
        {"n_expert": 2, "n_expert_used": 3},
        {"n_expert_used": 1},
    ],
)
def test_spec_rejects_impossible_shapes(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TinyModelSpec(**kwargs)  # type: ignore[arg-type]


def test_cached_model_writes_once_and_leaves_no_temp(tmp_path: Path) -> None:
    spec = TinyModelSpec(name="cache-test", n_layer=2, shards=2)
    first = cached_model(spec, tmp_path)
    stamps = [f.stat().st_mtime_ns for f in first]
    again = cached_model(spec, tmp_path)
    assert again == first
    assert [f.stat().st_mtime_ns for f in again] == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in first)
    assert cached_model(TinyModelSpec(name="cache-test", n_layer=2, seed=5), tmp_path) != first


# --- shard names ---------------------------------------------------------------------------


def test_parse_shard_name() -> None:
    assert parse_shard_name("/m/Qwen-Q4-00002-of-00005.gguf") == ("/m/Qwen-Q4", 2, 5)
    assert parse_shard_name(Path("a-00001-of-00001.gguf")) == ("a", 1, 1)
    assert parse_shard_name("/m/model.gguf") is None
    assert parse_shard_name("/m/model-1-of-2.gguf") is None


def test_shard_names() -> None:
    assert shard_names("/m/x-00001-of-00003.gguf", 3) == [
        "/m/x-00001-of-00003.gguf",
        "/m/x-00002-of-00003.gguf",
        "/m/x-00003-of-00003.gguf",
    ]
    assert shard_names("/m/x.gguf", 1) == ["/m/x.gguf"]
    with pytest.raises(ModelFileError, match="not the first of 3"):
        shard_names("/m/x-00002-of-00003.gguf", 3)
    with pytest.raises(ModelFileError):
        shard_names("/m/x.gguf", 2)


# --- headers ----------------------------------------------------------------------------------


def test_header_extent_of_full_file(tiny_files: list[Path]) -> None:
    data = tiny_files[0].read_bytes()
    reader = gguf.GGUFReader(tiny_files[0])
    extent = header_extent(data)
    assert extent <= reader.data_offset < extent + reader.alignment


@pytest.mark.parametrize("cut", [0, 3, 10, 23, 100, 5000, -1])
def test_truncated_header_needs_more(tiny_files: list[Path], cut: int) -> None:
    data = tiny_files[0].read_bytes()
    extent = header_extent(data)
    prefix = data[: (extent - 1 if cut < 0 else cut)]
    with pytest.raises(NeedMoreHeader) as caught:
        info_from_headers([("tiny.gguf", prefix, len(data))])
    assert len(prefix) < caught.value.needed <= extent
    assert caught.value.have == len(prefix)


def test_fetch_loop_converges_on_needed(tiny_files: list[Path], tiny_info: ModelInfo) -> None:
    """A caller that fetches max(needed, 2 * have) bytes reaches a parse in a few rounds."""
    data = tiny_files[0].read_bytes()
    have, rounds = 64, 0
    while True:
        rounds += 1
        try:
            info = info_from_headers([(str(tiny_files[0]), data[:have], len(data))])
            break
        except NeedMoreHeader as exc:
            have = max(exc.needed, 2 * have)
    assert info == tiny_info
    assert rounds < 12


def test_sparse_copy_parses_like_the_full_file(
    tiny_files: list[Path], tiny_info: ModelInfo, tmp_path: Path
) -> None:
    data = tiny_files[0].read_bytes()
    copy = header_sparse_copy(data[: header_extent(data)], len(data), tmp_path / "h.gguf")
    assert copy.stat().st_size == len(data)
    assert copy.stat().st_blocks * 512 < len(data)  # sparse: tensor data not stored
    assert read_model_info([copy]).layer_bytes == tiny_info.layer_bytes
    via_headers = info_from_headers([(str(tiny_files[0]), data[:20000], len(data))])
    assert via_headers == tiny_info


def test_headers_of_every_shard(sharded_files: list[Path]) -> None:
    headers = []
    for path in sharded_files:
        data = path.read_bytes()
        headers.append((str(path), data[: header_extent(data)], len(data)))
    assert info_from_headers(headers) == read_model_info(sharded_files)
    with pytest.raises(ModelFileError, match=r"missing .*00002-of-00003"):
        info_from_headers([headers[0], headers[2]])


def test_header_that_is_not_gguf() -> None:
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        header_extent(b"PK\x03\x04" + bytes(60))
    corrupt = b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little")
    corrupt += (1).to_bytes(8, "little") + (1 << 40).to_bytes(8, "little")
    with pytest.raises(ModelFileError, match="corrupt"):
        header_extent(corrupt)


def test_header_longer_than_claimed_size(tiny_files: list[Path], tmp_path: Path) -> None:
    data = tiny_files[0].read_bytes()
    with pytest.raises(ModelFileError, match="file has 100"):
        info_from_headers([("x.gguf", data[:20000], 100)])
    with pytest.raises(ModelFileError):
        header_sparse_copy(data[:200], 100, tmp_path / "x.gguf")


def test_wrong_real_size_is_a_model_error(tiny_files: list[Path]) -> None:
    data = tiny_files[0].read_bytes()
    with pytest.raises(ModelFileError, match="unreadable"):
        info_from_headers([("x.gguf", data[:20000], 30000)])


# --- layer assignment (llama_model::load_tensors) ---------------------------------------------


@pytest.mark.parametrize(
    ("n_layer", "split", "ngl", "layers", "output"),
    [
        # The output layer is the (n_layer+1)-th slot of the split, so 4 layers split 1/1
        # give device 0 three layers: real load log "RPC0[...:50152] model buffer size =
        # 0.85 MiB" (3 layers), "RPC0[...:50153] ... 0.47 MiB" (1 layer + output).
        (4, [1, 1], 99, [0, 0, 0, 1], 1),
        (4, [1, 1], -1, [0, 0, 0, 1], 1),
        (10, [1.2, 0.8], 99, [0] * 7 + [1] * 3, 1),
        # -ngl counts from the end: the output first, then the last repeating layers
        # (real log: "layer 0/1 assigned to device CPU", "2/3 ... RPC0", "4 ... RPC1").
        (4, [1, 1], 3, [None, None, 0, 0], 1),
        (10, [1, 1], 5, [None] * 6 + [0, 0, 0, 1], 1),
        (4, [1, 1], 1, [None] * 4, 0),
        (4, [1, 1], 0, [None] * 4, None),
        (4, [1, 1], 4, [None, 0, 0, 1], 1),
        (8, [1, 1, 1], 99, [0, 0, 0, 1, 1, 1, 2, 2], 2),
        (4, [0, 1], 99, [1, 1, 1, 1], 1),
        (4, [1, 0], 99, [0, 0, 0, 0], 0),
        (4, [3], 99, [0, 0, 0, 0], 0),
        (4, [], 99, [None] * 4, None),
    ],
)
def test_assign_layers_mirrors_llamacpp(
    n_layer: int, split: list[float], ngl: int, layers: list[int | None], output: int | None
) -> None:
    assert assign_layers(n_layer, split, ngl) == layers
    assert assign_output(n_layer, split, ngl) == output


def test_assign_layers_needs_a_real_split() -> None:
    with pytest.raises(ValueError):
        assign_layers(4, [0, 0], 99)
    with pytest.raises(ValueError):
        assign_layers(4, [1, -1], 99)


# --- KV cache and estimates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "parallel", "unified", "cells"),
    [
        (4096, 1, False, 4096),
        (4000, 1, False, 4096),
        (4096, 2, False, 4096),
        (5000, 3, False, 5376),  # pad(5000)=5120; 5120//3=1706 -> 1792 per stream
        (5000, 3, True, 5120),
    ],
)
def test_kv_cells(ctx: int, parallel: int, unified: bool, cells: int) -> None:
    assert kv_cells(ctx, parallel, unified) == cells


def test_kv_cache_bytes(tiny_info: ModelInfo) -> None:
    # 2 kv heads x 32 dims x 2 bytes, K and V: 256 bytes per cell per layer.
    # Real log for -c 4096 -np 2: "llama_kv_cache: size = 4.00 MiB (2048 cells, 4 layers,
    # 2/2 seqs), K (f16): 2.00 MiB, V (f16): 2.00 MiB".
    assert kv_cache_layer_bytes(tiny_info, 4096, parallel=2) == [MiB] * 4
    assert kv_cache_bytes(tiny_info, 4096, parallel=2) == 4 * MiB
    assert kv_cache_bytes(tiny_info, 0) == 8 * MiB  # 0 = training context (8192)
    assert kv_cache_bytes(tiny_info, 4096, "q8_0", "q8_0") == 4 * 4096 * 2 * 68
    with pytest.raises(ValueError, match="unknown cache type"):
        kv_cache_bytes(tiny_info, 4096, "f12")


def _devices(split: list[float], hosts: tuple[str, ...] = ("a", "b")) -> list[Device]:
    return [
        Device(host=h, label=f"RPC{i}", proportion=p)
        for i, (h, p) in enumerate(zip(hosts, split, strict=False))
    ]


@pytest.mark.parametrize(
    ("split", "ngl"), [([1, 1], 99), ([1.2, 0.8], 99), ([1, 1], 3), ([1, 1], 0)]
)
def test_estimate_totals_are_tensors_plus_kv(
    tiny_info: ModelInfo, split: list[float], ngl: int
) -> None:
    needed = estimate_memory(tiny_info, _devices(split), 4096, 2, ngl, head="head", compute_bytes=0)
    assert sum(needed.values()) == tiny_info.total_bytes + kv_cache_bytes(
        tiny_info, 4096, parallel=2
    )


def test_estimate_per_device(tiny_info: ModelInfo) -> None:
    est = estimate_devices(tiny_info, _devices([1, 1]), 4096, 2, 99, head="head")
    assert [(e.host, e.label, e.layers, e.has_output) for e in est] == [
        ("a", "RPC0", [0, 1, 2], False),
        ("b", "RPC1", [3], True),
        ("head", "CPU", [], False),
    ]
    assert [e.weights for e in est] == [3 * LAYER_BYTES, LAYER_BYTES + OUTPUT_BYTES, INPUT_BYTES]
    assert [e.kv for e in est] == [3 * MiB, MiB, 0]
    assert all(e.compute == DEFAULT_COMPUTE_BYTES for e in est)

    partial = estimate_devices(tiny_info, _devices([1, 1]), 4096, 2, 3, head="head")
    assert partial[2].layers == [0, 1]
    assert partial[2].weights == INPUT_BYTES + 2 * LAYER_BYTES
    assert partial[2].kv == 2 * MiB


def test_estimate_sums_devices_of_one_host(tiny_info: ModelInfo) -> None:
    devices = _devices([1, 1, 1], ("a", "a", "head"))
    needed = estimate_memory(tiny_info, devices, 4096, 1, 99, head="head", compute_bytes=MiB)
    per_device = estimate_devices(tiny_info, devices, 4096, 1, 99, head="head", compute_bytes=MiB)
    assert set(needed) == {"a", "head"}
    assert needed["a"] == per_device[0].total + per_device[1].total
    assert needed["head"] == per_device[2].total + per_device[3].total


def test_estimate_with_no_devices_is_all_cpu(tiny_info: ModelInfo) -> None:
    needed = estimate_memory(tiny_info, [], 4096, 1, 99, head="head", compute_bytes=0)
    assert needed == {"head": tiny_info.total_bytes + kv_cache_bytes(tiny_info, 4096)}


def test_fit_report() -> None:
    needed = {"evo": int(71.3 * GiB), "bee": 10 * GiB, "ghost": MiB}
    lines = fit_report(needed, {"evo": 64 * GiB, "bee": 64 * GiB})
    assert [(line.host, line.fits) for line in lines] == [
        ("evo", False),
        ("bee", True),
        ("ghost", False),
    ]
    assert lines[0].reason == "needs 71.3 GiB on evo, has 64.0 GiB"
    assert lines[1].reason == "needs 10.0 GiB on bee, has 64.0 GiB"
    assert lines[2].reason == "needs 1.0 MiB on ghost, has no memory figure"


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (12, 2048, 5 * MiB + MiB // 2, 3 * GiB)] == [
        "12 B",
        "2.0 KiB",
        "5.5 MiB",
        "3.0 GiB",
    ]


# --- a real split over two rpc-servers ------------------------------------------------------

BUILDS = Path(
    os.environ.get("CLUSTERCTL_LLAMACPP_BUILDS", "~/.cache/clusterctl/llama.cpp")
).expanduser()
# (version, rpc-server binary name)
GENERATIONS = [("0.3.36", "ggml-rpc-server"), ("0.3.30", "rpc-server")]
BUFFER_RE = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rpc-server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise AssertionError(f"rpc-server on port {port} did not listen within {timeout} s")


@contextlib.contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _last_load_buffers(log: str) -> dict[str, float]:
    """Model buffer sizes (MiB) of the last load: the current build first does a dry load."""
    blocks = log.split("load_tensors: loading model tensors")
    sizes: dict[str, float] = {}
    for name, mib in BUFFER_RE.findall(blocks[-1]):
        sizes[name] = sizes.get(name, 0.0) + float(mib)  # one CPU_Mapped line per shard
    return sizes


@pytest.mark.testbed
@pytest.mark.parametrize(("version", "rpc_name"), GENERATIONS)
@pytest.mark.parametrize("spec", [TINY, SHARDED], ids=["single", "sharded"])
def test_real_split_matches_estimate(
    version: str, rpc_name: str, spec: TinyModelSpec, model_dir: Path, tmp_path: Path
) -> None:
    bin_dir = BUILDS / version / "build" / "bin"
    server, rpc = bin_dir / "llama-server", bin_dir / rpc_name
    if not (server.is_file() and rpc.is_file()):
        pytest.skip(f"llama.cpp {version} binaries not built in {bin_dir}")
    files = cached_model(spec, model_dir / "cache")
    ports = [_free_port(), _free_port()]
    http_port = _free_port()
    with contextlib.ExitStack() as stack:
        for i, port in enumerate(ports):
            proc = stack.enter_context(
                _running([str(rpc), "-H", "127.0.0.1", "-p", str(port)], tmp_path / f"rpc{i}.log")
            )
            _wait_port(port, proc)
        endpoints = ",".join(f"127.0.0.1:{p}" for p in ports)
        argv = [
            str(server), "-m", str(files[0]), "--host", "127.0.0.1", "--port", str(http_port),
            "--rpc", endpoints, "-ts", "1/1", "-ngl", "99", "-c", "4096", "-np", "2",
            "--no-warmup", "-lv", "4",
        ]  # fmt: skip
        log_path = tmp_path / "server.log"
        server_proc = stack.enter_context(_running(argv, log_path))
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as client:
            while True:
                assert server_proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "llama-server not healthy in 60 s"
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/health").status_code == 200:
                        break
                time.sleep(0.1)
            body = {"prompt": "the opt", "n_predict": 8, "return_tokens": True}
            reply = client.post("/completion", json=body)
            assert reply.status_code == 200, reply.text
            assert "timings" in reply.json()
            # The generator keeps byte and control tokens out of the output (valid text).
            vocab = build_vocab()
            assert {vocab.types[t] for t in reply.json()["tokens"]} == {gguf.TokenType.NORMAL}
            tokens = client.post("/tokenize", json={"content": "opt contexttoken hello"})
            pieces = [vocab.tokens[t] for t in tokens.json()["tokens"]]
            assert pieces == ["\u2581opt", "\u2581context", "token", "\u2581hello"]
    log = log_path.read_text(errors="replace")

    buffers = _last_load_buffers(log)
    info = read_model_info(files)
    est = estimate_devices(info, _devices([1, 1]), 4096, 2, 99, head="head")
    # The RPC buffer names carry the endpoint ("RPC0[127.0.0.1:PORT]" for every device).
    for port, device in zip(ports, est[:2], strict=True):
        (real,) = [mib for name, mib in buffers.items() if name.endswith(f":{port}]")]
        assert real == pytest.approx(device.weights / MiB, abs=0.02, rel=0.02), (buffers, log)
    cpu = sum(mib for name, mib in buffers.items() if name.startswith("CPU"))
    assert cpu == pytest.approx(est[2].weights / MiB, abs=0.02, rel=0.02), buffers
