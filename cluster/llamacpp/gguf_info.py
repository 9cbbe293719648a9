"""What a GGUF model needs where: metadata, per-layer sizes, layer placement, memory fit.
What a GGUF model needs where: layer placement, KV cache, memory fit.

Before launching a split, the controller must know whether each host can hold its share:
the weights of the layers llama.cpp will put on its devices, their KV cache, and the
output layer on whichever device gets it. The model's numbers come from its GGUF metadata
(``gguf_model.ModelInfo``, read from files or from header prefixes: ``gguf_header``);
this module mirrors llama.cpp's own placement rules with pure functions:

- ``assign_layers`` / ``assign_output`` mirror ``llama_model::load_tensors`` in
  ``src/llama-model.cpp`` (the ``splits`` / ``i_gpu_start`` / ``act_gpu_layers`` /
  ``upper_bound`` code, identical in llama-cpp-python 0.3.30 and 0.3.36), including its
  float32 arithmetic.
- ``kv_cache_bytes`` mirrors ``llama_kv_cache`` and the context padding of
  ``llama_context``; ``estimate_memory`` and ``fit_report`` turn all of it into per-host
  figures and one-line verdicts.

The names of ``gguf_header`` and ``gguf_model`` are re-exported here, so callers that
need a model's fit import one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from cluster.config.resolve import Device
from cluster.llamacpp.gguf_header import (
    DEFAULT_HEADER_FETCH,
    GiB,
    MiB,
    ModelFileError,
    NeedMoreHeader,
    header_extent,
    header_sparse_copy,
    parse_shard_name,
    shard_names,
)
from cluster.llamacpp.gguf_model import ModelInfo, info_from_headers, read_model_info

__all__ = [
    "CTX_PAD",
    "DEFAULT_COMPUTE_BYTES",
    "DEFAULT_HEADER_FETCH",
    "HEAD_CPU_LABEL",
    "DeviceEstimate",
    "FitLine",
    "GiB",
    "MiB",
    "ModelFileError",
    "ModelInfo",
    "NeedMoreHeader",
    "assign_layers",
    "assign_output",
    "estimate_devices",
    "estimate_memory",
    "fit_report",
    "format_bytes",
    "header_extent",
    "header_sparse_copy",
    "info_from_headers",
    "kv_cache_bytes",
    "kv_cache_layer_bytes",
    "kv_cells",
    "parse_shard_name",
    "read_model_info",
    "shard_names",
]

# llama.cpp pads the context to a multiple of 256 cells (llama_context constructor).
CTX_PAD = 256

# Per-device allowance for llama.cpp's compute buffers (graph intermediates, logits).
# A flat estimate: the real figure depends on batch size, context, flash attention and
# backend, and llama.cpp only reports it after loading ("compute buffer size = ...").
DEFAULT_COMPUTE_BYTES = 512 * MiB

HEAD_CPU_LABEL = "CPU"


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
