"""Write a generated GGUF model of a chosen size for the GPU benchmark.

A mixture of experts in llama.cpp's llama architecture (as Mixtral's), like the seeds'
models: attention on every token, ``n_expert`` routed feed-forward experts of which
``n_expert_used`` run per token. Every layer shares its random arrays (``shared_weights``),
so tens of GB are written at disk speed. Prints the path and the size.

Usage: python benchmarks/gpu/bigmodel.py OUT.gguf [--layers N] [--embd N] [--ff N]
       [--experts N] [--used N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cluster.testbed.models import TinyModelSpec, write_model


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--embd", type=int, default=6144)
    parser.add_argument("--ff", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--used", type=int, default=2)
    args = parser.parse_args()
    spec = TinyModelSpec(
        name="gpu-moe",
        n_layer=args.layers,
        n_embd=args.embd,
        n_head=args.embd // 128,
        n_head_kv=max(1, args.embd // 512),
        n_ff=args.ff,
        n_ctx_train=32768,
        n_expert=args.experts,
        n_expert_used=args.used,
        shared_weights=True,
    )
    start = time.monotonic()
    [path] = write_model(spec, args.out)
    size = path.stat().st_size
    print(f"{path} {size} bytes ({size / 2**30:.2f} GiB) in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
