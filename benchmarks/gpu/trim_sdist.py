"""Make the llama-cpp-python sdist small enough to carry to the GPU machine.

The device machine cannot reach a package index, and a call carries at most 64 MiB: this
writes an archive with the sdist's own layout (so the project's builder,
``cluster.builds.local``, builds from it as from the real sdist and records its SHA-256)
holding only what a CUDA build of llama-server, the RPC server and llama-bench needs: the
vendored tree without its models, docs, media, tests, benches and the backends of other
hardware, and the submodule record that names the commit.

Usage: python benchmarks/gpu/trim_sdist.py SDIST OUT_DIR
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

DROP_DIRS = ("models", "docs", "media", "tests", "benches", "examples", "gguf-py", ".devops")
DROP_BACKENDS = (
    "ggml-sycl", "ggml-opencl", "ggml-hexagon", "ggml-metal", "ggml-cann", "ggml-musa",
    "ggml-vulkan", "ggml-webgpu", "ggml-zdnn", "ggml-kompute", "ggml-hip",
)  # fmt: skip


def keep(name: str) -> bool:
    parts = name.split("/")
    if len(parts) < 2:
        return True
    rest = parts[1:]
    if rest[:4] == [".git", "modules", "vendor", "llama.cpp"]:
        return rest[4:] in ([], ["HEAD"])
    if rest[:2] != ["vendor", "llama.cpp"]:
        return False
    tree = rest[2:]
    if tree and tree[0] in DROP_DIRS:
        return False
    return not (len(tree) >= 3 and tree[:2] == ["ggml", "src"] and tree[2] in DROP_BACKENDS)


def main() -> int:
    sdist, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    target = out / sdist.name
    with tarfile.open(sdist) as source, tarfile.open(target, "w:gz", compresslevel=9) as dest:
        for member in source.getmembers():
            if keep(member.name):
                data = source.extractfile(member) if member.isfile() else None
                dest.addfile(member, data)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
