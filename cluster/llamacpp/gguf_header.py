"""The bytes of a GGUF file on disk: shard names and the header's extent.

The model usually lives on a remote host of which only a prefix (the header: metadata and
tensor infos) can be fetched cheaply. ``header_extent`` says how many bytes the header
needs (raising ``NeedMoreHeader`` with a lower bound when the prefix is too short, so the
caller can fetch more and retry), and ``header_sparse_copy`` writes the prefix into a
sparse file of the real size so gguf-py's ``GGUFReader`` can parse it without the tensor
data (``gguf_model.info_from_headers``). ``parse_shard_name`` / ``shard_names`` know
llama.cpp's split naming, ``<prefix>-0000i-of-0000N.gguf``.

Errors::

    ClusterError (cluster.errors)
    └── ModelFileError        a GGUF file is unreadable, inconsistent or incomplete
        └── NeedMoreHeader    the header prefix is too short; ``needed`` is a lower bound
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from cluster.errors import ClusterError

GiB = 1024**3
MiB = 1024**2

# A first fetch that holds the header of most real models (large vocabularies with BPE
# merges run to several MB); NeedMoreHeader says when it does not.
DEFAULT_HEADER_FETCH = 16 * MiB

_SHARD_RE = re.compile(r"^(?P<prefix>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")

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
