"""What a GGUF model needs where: metadata, per-layer sizes, layer placement, memory fit.

Before launching a split, the controller must know whether each host can hold its share:
the weights of the layers llama.cpp will put on its devices, their KV cache, and the
output layer on whichever device gets it. This module reads that knowledge from GGUF
metadata and mirrors llama.cpp's own placement rules, with pure functions where possible:

- ``read_model_info`` reads local files (every shard of a split model) with gguf-py's
  ``GGUFReader``.
- The model usually lives on a remote host of which only a prefix (the header) can be
  fetched cheaply. ``header_extent`` says how many bytes the header needs (raising
  ``NeedMoreHeader`` with a lower bound when the prefix is too short, so the caller can
  fetch more and retry), ``header_sparse_copy`` writes the prefix into a sparse file of
  the real size so ``GGUFReader`` can parse it without the tensor data, and
  ``info_from_headers`` does both for every shard.
- ``assign_layers`` / ``assign_output`` mirror ``llama_model::load_tensors`` in
  ``src/llama-model.cpp`` (the ``splits`` / ``i_gpu_start`` / ``act_gpu_layers`` /
  ``upper_bound`` code, identical in llama-cpp-python 0.3.30 and 0.3.36), including its
  float32 arithmetic.
- ``kv_cache_bytes`` mirrors ``llama_kv_cache`` and the context padding of
  ``llama_context``; ``estimate_memory`` and ``fit_report`` turn all of it into per-host
  figures and one-line verdicts.

Errors::

    ClusterError (cluster.errors)
    └── ModelFileError        a GGUF file is unreadable, inconsistent or incomplete
        └── NeedMoreHeader    the header prefix is too short; ``needed`` is a lower bound
"""

from __future__ import annotations

import re
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from cluster.config.resolve import Device
from cluster.errors import ClusterError

GiB = 1024**3
MiB = 1024**2

# A first fetch that holds the header of most real models (large vocabularies with BPE
# merges run to several MB); NeedMoreHeader says when it does not.
DEFAULT_HEADER_FETCH = 16 * MiB

# llama.cpp pads the context to a multiple of 256 cells (llama_context constructor).
CTX_PAD = 256

# Per-device allowance for llama.cpp's compute buffers (graph intermediates, logits).
# A flat estimate: the real figure depends on batch size, context, flash attention and
# backend, and llama.cpp only reports it after loading ("compute buffer size = ...").
DEFAULT_COMPUTE_BYTES = 512 * MiB

HEAD_CPU_LABEL = "CPU"

_SHARD_RE = re.compile(r"^(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_OUTPUT_TENSORS = ("output.weight", "output.bias", "output_norm.weight", "output_norm.bias")

# GGUF value types -> fixed sizes in bytes (strings and arrays are walked separately).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
# Lengths beyond these mean a corrupt header, not a short prefix.
_MAX_STRING = 1 << 30
_MAX_COUNT = 1 << 32


class ModelFileError(ClusterError):
    """A GGUF file could not be read, is inconsistent, or a shard is missing."""


class NeedMoreHeader(ModelFileError):
    """The header prefix ends before the tensor infos do; fetch at least ``needed`` bytes."""

    def __init__(self, name: str, have: int, needed: int) -> None:
        super().__init__(f"{name}: the GGUF header needs at least {needed} bytes, got {have}")
        self.name = name
        self.have = have
        self.needed = needed


@dataclass(frozen=True)
class ModelInfo:
    """Shape and byte sizes of one model (all shards together).

    ``layer_bytes[i]`` is the size of every ``blk.i.*`` tensor; ``input_bytes`` the other
    non-output tensors (token embeddings and friends, which llama.cpp keeps on the host
    CPU); ``output_bytes`` the output head (``output.weight`` and ``output_norm``), which
    goes to a device when it is offloaded. When the model has no ``output.weight``
    (tied embeddings) llama.cpp loads ``token_embd`` a second time as the output, and
    ``output_bytes`` counts that copy (``tied_output``).
    """

    architecture: str
    name: str | None
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    n_vocab: int
    shard_count: int
    shard_names: list[str]
    file_sizes: list[int]
    layer_bytes: list[int]
    input_bytes: int
    output_bytes: int
    total_bytes: int  # sum of the tensors stored in the files
    tied_output: bool = False
    layer_kv_heads: list[int] = field(default_factory=list)  # per layer; GQA may vary

    @property
    def file_bytes(self) -> int:
        return sum(self.file_sizes)

    def kv_heads(self, layer: int) -> int:
        return self.layer_kv_heads[layer] if self.layer_kv_heads else self.n_head_kv


# --- shard names -----------------------------------------------------------------------


def parse_shard_name(path: str | Path) -> tuple[str, int, int] | None:
    """``(prefix, index, count)`` of a llama.cpp split name ``<prefix>-0000i-of-0000N.gguf``.

    The index is 1-based, as in the name; None when the name is not a split name.
    """
    match = _SHARD_RE.match(str(path))
    if match is None:
        return None
    return match["prefix"], int(match["index"]), int(match["count"])


def shard_names(first_shard: str, count: int) -> list[str]:
    """Every shard's name (same directory as given), from the first shard's name and count."""
    if count == 1:
        return [first_shard]
    parsed = parse_shard_name(first_shard)
    if parsed is None or parsed[1] != 1 or parsed[2] != count:
        raise ModelFileError(
            f"{first_shard}: not the first of {count} shards "
            f"(expected <name>-00001-of-{count:05d}.gguf)"
        )
    return [f"{parsed[0]}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


# --- header parsing ----------------------------------------------------------------------


def header_extent(header: bytes, name: str = "model", file_size: int | None = None) -> int:
    """Bytes from the file start to the end of the tensor infos (what a parser must see).

    Walks the GGUF structure without interpreting values. Raises NeedMoreHeader when the
    prefix ends early (``needed`` is then the least the walk knows it needs), and
    ModelFileError when the bytes are not GGUF or claim impossible lengths.
    """
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        start, pos = pos, pos + n
        if file_size is not None and pos > file_size:
            raise ModelFileError(f"{name}: header claims {pos} bytes but the file has {file_size}")
        if pos > len(header):
            raise NeedMoreHeader(name, len(header), pos)
        return start

    def u32() -> int:
        return int(struct.unpack_from("<I", header, take(4))[0])

    def u64() -> int:
        return int(struct.unpack_from("<Q", header, take(8))[0])

    def string() -> None:
        length = u64()
        if length > _MAX_STRING:
            raise ModelFileError(f"{name}: corrupt header (string of {length} bytes at {pos - 8})")
        take(length)

    def value(vtype: int) -> None:
        if vtype in _SCALAR_SIZES:
            take(_SCALAR_SIZES[vtype])
        elif vtype == _STRING:
            string()
        elif vtype == _ARRAY:
            item_type, count = u32(), u64()
            if count > _MAX_COUNT:
                raise ModelFileError(f"{name}: corrupt header (array of {count} items)")
            if item_type in _SCALAR_SIZES:
                take(_SCALAR_SIZES[item_type] * count)
            else:
                for _ in range(count):
                    value(item_type)
        else:
            raise ModelFileError(
                f"{name}: corrupt header (unknown value type {vtype} at {pos - 4})"
            )

    if len(header) >= 4 and header[:4] != b"GGUF":
        raise ModelFileError(f"{name}: not a GGUF file (magic {header[:4]!r})")
    take(4)
    version = u32()
    if version not in (2, 3):
        raise ModelFileError(f"{name}: unsupported GGUF version {version}")
    n_tensors, n_kv = u64(), u64()
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise ModelFileError(f"{name}: corrupt header ({n_tensors} tensors, {n_kv} keys)")
    for _ in range(n_kv):
        string()
        value(u32())
    for _ in range(n_tensors):
        string()
        n_dims = u32()
        if n_dims > 8:
            raise ModelFileError(f"{name}: corrupt header (tensor with {n_dims} dimensions)")
        take(8 * n_dims + 4 + 8)
    return pos


def header_sparse_copy(header: bytes, file_size: int, dest: Path) -> Path:
    """Write ``header`` to ``dest`` and extend it, sparse, to the real ``file_size``.

    GGUFReader maps the whole file and checks that every tensor lies inside it; the
    sparse copy satisfies that without the tensor data, and costs no disk blocks.
    """
    if len(header) > file_size:
        raise ModelFileError(
            f"{dest.name}: {len(header)} header bytes but the file has {file_size}"
        )
    with dest.open("wb") as out:
        out.write(header)
        out.truncate(file_size)
    return dest


@dataclass(frozen=True)
class _Shard:
    """What one file contributes: its metadata scalars, split keys and tensor sizes."""

    name: str
    size: int
    meta: dict[str, Any]
    tensors: dict[str, int]
    n_vocab_tokens: int | None


def _read_shard(path: Path, display: str) -> _Shard:
    """Parse one GGUF file; gguf-py's exceptions become ModelFileError here."""
    try:
        reader = gguf.GGUFReader(path)
        meta: dict[str, Any] = {}
        n_tokens: int | None = None
        for key, fld in reader.fields.items():
            if key == "tokenizer.ggml.tokens":
                n_tokens = len(fld.data)
            elif not fld.types or fld.types[0] != gguf.GGUFValueType.ARRAY:
                meta[key] = fld.contents()
            elif fld.types[-1] != gguf.GGUFValueType.STRING and len(fld.data) <= 4096:
                meta[key] = fld.contents()  # per-layer arrays (head counts, ...)
        tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
        size = int(reader.data.shape[0])
    except (ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
        raise ModelFileError(f"{display}: unreadable GGUF ({exc})") from exc
    except OSError as exc:
        raise ModelFileError(f"{display}: cannot read ({exc.strerror or exc})") from exc
    return _Shard(name=display, size=size, meta=meta, tensors=tensors, n_vocab_tokens=n_tokens)


def _int_key(meta: dict[str, Any], key: str, name: str, default: int | None = None) -> int:
    raw = meta.get(key, default)
    if raw is None:
        raise ModelFileError(f"{name}: missing metadata key {key}")
    if isinstance(raw, list):
        return int(max(raw)) if raw else 0
    return int(raw)


def _combine(shards: list[_Shard]) -> ModelInfo:
    """One ModelInfo from the parsed shards, checking that they belong together."""
    first = shards[0]
    meta = first.meta
    count = int(meta.get("split.count", 1))
    names = shard_names(first.name, count)
    if len(shards) != count:
        missing = [n for n in names if n not in {s.name for s in shards}]
        raise ModelFileError(
            f"{first.name}: model has {count} shards; missing {', '.join(missing)}"
        )
    for expect, shard in enumerate(shards):
        got = int(shard.meta.get("split.no", 0))
        if got != expect or int(shard.meta.get("split.count", 1)) != count:
            raise ModelFileError(
                f"{shard.name}: is split {got} of {shard.meta.get('split.count')}, "
                f"expected {expect} of {count}"
            )
    tensors: dict[str, int] = {}
    for shard in shards:
        tensors.update(shard.tensors)
    expected_tensors = meta.get("split.tensors.count")
    if expected_tensors is not None and int(expected_tensors) != len(tensors):
        raise ModelFileError(
            f"{first.name}: {len(tensors)} tensors in the shards, header says {expected_tensors}"
        )

    arch = str(meta.get("general.architecture", ""))
    if not arch:
        raise ModelFileError(f"{first.name}: missing metadata key general.architecture")
    n_layer = _int_key(meta, f"{arch}.block_count", first.name)
    n_embd = _int_key(meta, f"{arch}.embedding_length", first.name)
    n_head = _int_key(meta, f"{arch}.attention.head_count", first.name)
    kv_raw = meta.get(f"{arch}.attention.head_count_kv", n_head)
    layer_kv_heads = (
        [int(x) for x in kv_raw] if isinstance(kv_raw, list) else [int(kv_raw)] * n_layer
    )
    head_default = n_embd // n_head if n_head else 0
    head_dim_k = _int_key(meta, f"{arch}.attention.key_length", first.name, head_default)
    head_dim_v = _int_key(meta, f"{arch}.attention.value_length", first.name, head_default)

    layer_bytes = [0] * n_layer
    input_bytes = output_bytes = 0
    for tname, nbytes in tensors.items():
        layer = _LAYER_RE.match(tname)
        if layer is not None and int(layer[1]) < n_layer:
            layer_bytes[int(layer[1])] += nbytes
        elif tname in _OUTPUT_TENSORS:
            output_bytes += nbytes
        else:
            input_bytes += nbytes
    tied = "output.weight" not in tensors and "token_embd.weight" in tensors
    if tied:
        output_bytes += tensors["token_embd.weight"]
    n_vocab = first.n_vocab_tokens or _int_key(meta, f"{arch}.vocab_size", first.name, 0)
    name = meta.get("general.name")
    return ModelInfo(
        architecture=arch,
        name=str(name) if name is not None else None,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=max(layer_kv_heads, default=0),
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ctx_train=_int_key(meta, f"{arch}.context_length", first.name, 0),
        n_vocab=n_vocab,
        shard_count=count,
        shard_names=[Path(n).name for n in names],
        file_sizes=[s.size for s in shards],
        layer_bytes=layer_bytes,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        total_bytes=sum(tensors.values()),
        tied_output=tied,
        layer_kv_heads=layer_kv_heads,
    )


def read_model_info(paths: Sequence[Path]) -> ModelInfo:
    """ModelInfo of a local model from its files (first shard first).

    Given only the first shard of a split model, the other shards are looked up next to
    it by llama.cpp's naming; a missing shard is a ModelFileError naming it.
    """
    if not paths:
        raise ModelFileError("no model files given")
    shards = [_read_shard(Path(p), str(p)) for p in paths]
    count = int(shards[0].meta.get("split.count", 1))
    if len(paths) == 1 and count > 1:
        for other in shard_names(str(paths[0]), count)[1:]:
            if not Path(other).is_file():
                raise ModelFileError(f"{paths[0]}: model has {count} shards; missing {other}")
            shards.append(_read_shard(Path(other), other))
    return _combine(shards)


def info_from_headers(headers: Sequence[tuple[str, bytes, int]]) -> ModelInfo:
    """ModelInfo from header prefixes of every shard: ``(name, header bytes, real size)``.

    Raises NeedMoreHeader (naming the shard and a lower bound) when a prefix is too short.
    """
    if not headers:
        raise ModelFileError("no model headers given")
    for name, header, size in headers:
        header_extent(header, name, size)
    shards: list[_Shard] = []
    with tempfile.TemporaryDirectory(prefix="clusterctl-gguf-") as tmp:
        for index, (name, header, size) in enumerate(headers):
            copy = header_sparse_copy(header, size, Path(tmp) / f"shard{index}.gguf")
            shards.append(_read_shard(copy, name))
    return _combine(shards)


# --- placement ---------------------------------------------------------------------------


def _split_points(split: Sequence[float]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Cumulative, normalised split points, in float32 as llama.cpp computes them."""
    if any(p < 0 for p in split) or not any(p > 0 for p in split):
        # llama.cpp then splits by each device's free memory, which we cannot know here.
        raise ValueError(f"split {list(split)} needs a positive proportion and none negative")
    points = np.zeros(len(split), dtype=np.float32)
    total = np.float32(0.0)
    for i, proportion in enumerate(split):
        total = np.float32(total + np.float32(proportion))
        points[i] = total
    return (points / total).astype(np.float32)


def _device_of(il: int, n_layer: int, split: Sequence[float], n_gpu_layers: int) -> int | None:
    """llama.cpp's get_layer_buft_list: layer ``il`` (``n_layer`` = output) -> device index."""
    if not split:
        return None
    ngl = n_layer + 1 if n_gpu_layers < 0 else n_gpu_layers
    i_gpu_start = max(n_layer + 1 - ngl, 0)
    act_gpu_layers = min(ngl, n_layer + 1)
    if il < i_gpu_start or (il - i_gpu_start) >= act_gpu_layers:
        return None
    x = np.float32(il - i_gpu_start) / np.float32(act_gpu_layers)
    index = int(np.searchsorted(_split_points(split), x, side="right"))  # std::upper_bound
    return min(index, len(split) - 1)


def assign_layers(n_layer: int, split: Sequence[float], n_gpu_layers: int) -> list[int | None]:
    """Device index (in split order) of each repeating layer; None = stays on the CPU.

    Mirrors llama.cpp: the output layer counts as layer ``n_layer`` in the split, so with
    ``-ngl 99`` four layers split 1/1 go ``[0, 0, 0, 1]`` and the output to device 1.
    ``n_gpu_layers`` offloads the LAST layers first (the output layer before any
    repeating one); a negative value means all, as llama.cpp's default does.
    """
    return [_device_of(il, n_layer, split, n_gpu_layers) for il in range(n_layer)]


def assign_output(n_layer: int, split: Sequence[float], n_gpu_layers: int) -> int | None:
    """Device index that holds the output layer, or None when it stays on the CPU."""
    return _device_of(n_layer, n_layer, split, n_gpu_layers)


# --- KV cache ----------------------------------------------------------------------------


def _row_bytes(type_name: str, n: int) -> int:
    try:
        qtype = gguf.GGMLQuantizationType[type_name.upper()]
    except KeyError:
        raise ValueError(f"unknown cache type {type_name!r}") from None
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if n % block:
        raise ValueError(
            f"cache type {type_name} needs rows that are multiples of {block}, not {n}"
        )
    return n // block * size


def kv_cells(ctx_size: int, parallel: int = 1, unified: bool = False) -> int:
    """KV cells llama.cpp allocates for ``-c ctx_size -np parallel`` (all slots together).

    The context is padded to 256; without a unified cache each of the ``parallel``
    streams gets ``pad(ctx/parallel, 256)`` cells.
    """
    n_ctx = -(-ctx_size // CTX_PAD) * CTX_PAD
    if unified or parallel <= 1:
        return n_ctx
    per_seq = -(-(n_ctx // parallel) // CTX_PAD) * CTX_PAD
    return per_seq * parallel


def kv_cache_layer_bytes(
    info: ModelInfo,
    ctx_size: int,
    type_k: str = "f16",
    type_v: str = "f16",
    *,
    parallel: int = 1,
    unified: bool = False,
) -> list[int]:
    """KV cache bytes of each layer; see ``kv_cache_bytes``."""
    cells = kv_cells(ctx_size if ctx_size > 0 else info.n_ctx_train, parallel, unified)
    out = []
    for il in range(info.n_layer):
        heads = info.kv_heads(il)
        k = _row_bytes(type_k, info.head_dim_k * heads) if heads else 0
        v = _row_bytes(type_v, info.head_dim_v * heads) if heads else 0
        out.append(cells * (k + v))
    return out


def kv_cache_bytes(
    info: ModelInfo,
    ctx_size: int,
    type_k: str = "f16",
    type_v: str = "f16",
    *,
    parallel: int = 1,
    unified: bool = False,
) -> int:
    """Total KV cache bytes for llama-server ``-c ctx_size`` (``-ctk``/``-ctv`` types).

    llama-server's ``-c`` is the TOTAL context of all ``-np`` slots together, not per
    slot: ``-c 200000 -np 2`` gives each slot 100000 tokens, and the cache is sized by
    the total. ``ctx_size`` 0 means the model's training context, as in llama.cpp.
    Every layer is assumed to use full attention (sliding-window layers need less), so
    for such models this is an upper bound.
    """
    return sum(
        kv_cache_layer_bytes(info, ctx_size, type_k, type_v, parallel=parallel, unified=unified)
    )


# --- memory estimate and fit -------------------------------------------------------------


@dataclass(frozen=True)
class DeviceEstimate:
    """What one device (or the head's CPU, label ``CPU``) is estimated to hold."""

    host: str
    label: str
    layers: list[int]
    has_output: bool
    weights: int
    kv: int
    compute: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def estimate_devices(
    info: ModelInfo,
    devices: Sequence[Device],
    ctx_size: int,
    parallel: int,
    n_gpu_layers: int,
    head: str,
    *,
    type_k: str = "f16",
    type_v: str = "f16",
    unified: bool = False,
    compute_bytes: int = DEFAULT_COMPUTE_BYTES,
) -> list[DeviceEstimate]:
    """Per-device estimate, in split order, then the head's CPU.

    The CPU entry holds the input embeddings, every layer not offloaded (with its KV)
    and the output layer when it is not offloaded. Each device with anything on it, and
    the head's CPU, gets ``compute_bytes`` for compute buffers.
    """
    split = [d.proportion for d in devices]
    kv = kv_cache_layer_bytes(info, ctx_size, type_k, type_v, parallel=parallel, unified=unified)
    placement = (
        assign_layers(info.n_layer, split, n_gpu_layers) if devices else [None] * info.n_layer
    )
    output = assign_output(info.n_layer, split, n_gpu_layers) if devices else None
    slots: list[tuple[str, str]] = [(d.host, d.label) for d in devices] + [(head, HEAD_CPU_LABEL)]
    cpu = len(devices)
    out = []
    for index, (host, label) in enumerate(slots):
        layers = [il for il, dev in enumerate(placement) if (cpu if dev is None else dev) == index]
        has_output = (cpu if output is None else output) == index
        weights = sum(info.layer_bytes[il] for il in layers)
        weights += info.output_bytes if has_output else 0
        weights += info.input_bytes if index == cpu else 0
        used = bool(layers) or has_output or index == cpu
        out.append(
            DeviceEstimate(
                host=host,
                label=label,
                layers=layers,
                has_output=has_output,
                weights=weights,
                kv=sum(kv[il] for il in layers),
                compute=compute_bytes if used else 0,
            )
        )
    return out


def estimate_memory(
    info: ModelInfo,
    devices: Sequence[Device],
    ctx_size: int,
    parallel: int,
    n_gpu_layers: int,
    head: str,
    *,
    type_k: str = "f16",
    type_v: str = "f16",
    unified: bool = False,
    compute_bytes: int = DEFAULT_COMPUTE_BYTES,
) -> dict[str, int]:
    """Bytes each host needs to serve the model with this split: an estimate.

    Weights of the layers on its devices plus their KV cache, the output layer on the
    device llama.cpp gives it, and on the head host (``head``) the input embeddings and
    any layer not offloaded. ``compute_bytes`` per used device (and the head's CPU) is
    a flat allowance for compute buffers, which llama.cpp sizes only at load time.
    """
    needed: dict[str, int] = {}
    for est in estimate_devices(
        info,
        devices,
        ctx_size,
        parallel,
        n_gpu_layers,
        head,
        type_k=type_k,
        type_v=type_v,
        unified=unified,
        compute_bytes=compute_bytes,
    ):
        needed[est.host] = needed.get(est.host, 0) + est.total
    return needed


def format_bytes(n: int) -> str:
    """Human size in binary units with one decimal: ``71.3 GiB``, ``12.0 MiB``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class FitLine:
    """The verdict for one host: does the estimate fit what it has available?"""

    host: str
    needed: int
    available: int | None
    fits: bool
    reason: str


def fit_report(needed: dict[str, int], available: dict[str, int]) -> list[FitLine]:
    """One line per host in ``needed``: ``needs 71.3 GiB on evo, has 64.0 GiB``."""
    lines = []
    for host, need in needed.items():
        have = available.get(host)
        if have is None:
            lines.append(
                FitLine(
                    host,
                    need,
                    None,
                    False,
                    f"needs {format_bytes(need)} on {host}, has no memory figure",
                )
            )
            continue
        reason = f"needs {format_bytes(need)} on {host}, has {format_bytes(have)}"
        lines.append(FitLine(host, need, have, need <= have, reason))
    return lines
