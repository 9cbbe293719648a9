"""What a GGUF model is: its shape and the bytes of its tensors, all shards together.

``read_model_info`` reads local files with gguf-py's ``GGUFReader``; ``info_from_headers``
reads header prefixes fetched from a remote host (``gguf_header``). Both give a
``ModelInfo``: the architecture's numbers, the bytes of every repeating layer, of the
input and output tensors, and of the routed experts of a mixture-of-experts model, which
the memory estimate (``gguf_info``) and the bandwidth model (``measure.bandwidth``) read.
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

from cluster.llamacpp.gguf_header import (
    ModelFileError,
    header_extent,
    header_sparse_copy,
    shard_names,
)

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
# Routed experts (ffn_gate_exps, ffn_up_exps, ffn_down_exps, ffn_gate_up_exps and their
# biases); a shared expert (``_shexp``) and the router (``ffn_gate_inp``) are not.
_EXPERTS_RE = re.compile(r"^blk\.\d+\.ffn_\w*_exps\.")
_TOKEN_EMBD = "token_embd.weight"  # noqa: S105 - a tensor name, not a password
_OUTPUT_TENSORS = ("output.weight", "output.bias", "output_norm.weight", "output_norm.bias")


@dataclass(frozen=True)
class ModelInfo:
    """Shape and byte sizes of one model (all shards together).

    ``layer_bytes[i]`` is the size of every ``blk.i.*`` tensor; ``input_bytes`` the other
    non-output tensors (token embeddings and friends, which llama.cpp keeps on the host
    CPU); ``output_bytes`` the output head (``output.weight`` and ``output_norm``), which
    goes to a device when it is offloaded. When the model has no ``output.weight``
    (tied embeddings) llama.cpp loads ``token_embd`` a second time as the output, and
    ``output_bytes`` counts that copy (``tied_output``).

    A mixture-of-experts model has ``expert_count`` routed experts per MoE layer, of which
    ``expert_used_count`` work on each token; ``layer_expert_bytes[i]`` is the part of
    ``layer_bytes[i]`` held by layer i's routed experts (0 in a dense layer). The token
    embedding is ``token_embd_bytes`` in ``token_embd_rows`` rows, one per vocabulary
    entry (a token reads only its own row).
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
    layer_expert_bytes: list[int] = field(default_factory=list)  # per layer; empty: dense
    expert_count: int = 0
    expert_used_count: int = 0
    token_embd_bytes: int = 0
    token_embd_rows: int = 0

    @property
    def file_bytes(self) -> int:
        return sum(self.file_sizes)

    def kv_heads(self, layer: int) -> int:
        return self.layer_kv_heads[layer] if self.layer_kv_heads else self.n_head_kv

    def expert_bytes(self, layer: int) -> int:
        return self.layer_expert_bytes[layer] if self.layer_expert_bytes else 0

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 0 and any(self.layer_expert_bytes)

    @property
    def token_embd_row_bytes(self) -> int:
        """Bytes of one row of the token embedding (0 when the model has none)."""
        return self.token_embd_bytes // self.token_embd_rows if self.token_embd_rows else 0


@dataclass(frozen=True)
class _Shard:
    """What one file contributes: its metadata scalars, split keys and tensor sizes."""

    name: str
    size: int
    meta: dict[str, Any]
    tensors: dict[str, int]
    n_vocab_tokens: int | None
    embd_rows: int | None = None  # rows of token_embd.weight, when this shard holds it


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
        embd_rows = next(
            (
                int(t.n_elements) // max(int(t.shape[0]), 1)
                for t in reader.tensors
                if t.name == _TOKEN_EMBD
            ),
            None,
        )
        size = int(reader.data.shape[0])
    except (ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
        raise ModelFileError(f"{display}: unreadable GGUF ({exc})") from exc
    except OSError as exc:
        raise ModelFileError(f"{display}: cannot read ({exc.strerror or exc})") from exc
    return _Shard(display, size, meta, tensors, n_tokens, embd_rows)


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
    expert_bytes = [0] * n_layer
    input_bytes = output_bytes = 0
    for tname, nbytes in tensors.items():
        layer = _LAYER_RE.match(tname)
        if layer is not None and int(layer[1]) < n_layer:
            layer_bytes[int(layer[1])] += nbytes
            if _EXPERTS_RE.match(tname):
                expert_bytes[int(layer[1])] += nbytes
        elif tname in _OUTPUT_TENSORS:
            output_bytes += nbytes
        else:
            input_bytes += nbytes
    tied = "output.weight" not in tensors and _TOKEN_EMBD in tensors
    if tied:
        output_bytes += tensors[_TOKEN_EMBD]
    embd_rows = next((s.embd_rows for s in shards if s.embd_rows is not None), 0)
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
        layer_expert_bytes=expert_bytes if any(expert_bytes) else [],
        expert_count=_int_key(meta, f"{arch}.expert_count", first.name, 0),
        expert_used_count=_int_key(meta, f"{arch}.expert_used_count", first.name, 0),
        token_embd_bytes=tensors.get(_TOKEN_EMBD, 0),
        token_embd_rows=embd_rows,
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
