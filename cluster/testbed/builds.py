"""Build the two llama.cpp generations from the llama-cpp-python sdists on PyPI.

The sdist vendors the whole llama.cpp tree; we build only the three binaries we use, with
the CPU and RPC backends, into a cache outside the repository
(``$CLUSTERCTL_CACHE`` or ``~/.cache/clusterctl``)::

    llama.cpp/sdist/llama_cpp_python-VERSION.tar.gz
    llama.cpp/VERSION/src/vendor/llama.cpp/...
    llama.cpp/VERSION/build/bin/{llama-server,RPC-BINARY,llama-bench}
    llama.cpp/VERSION/built.json      written last: its presence means the build is whole

A build takes a few minutes on two cores; a cached one costs nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import ClusterError


@dataclass(frozen=True)
class Generation:
    """One llama.cpp generation and the sdist that carries it."""

    name: str
    sdist_version: str
    rpc_target: str

    @property
    def targets(self) -> tuple[str, ...]:
        return ("llama-server", self.rpc_target, "llama-bench")


GENERATIONS = {
    "current": Generation("current", "0.3.36", "ggml-rpc-server"),
    "legacy": Generation("legacy", "0.3.30", "rpc-server"),
}


def cache_root() -> Path:
    return Path(os.environ.get("CLUSTERCTL_CACHE") or Path.home() / ".cache" / "clusterctl")


def build_root(generation: Generation) -> Path:
    return cache_root() / "llama.cpp" / generation.sdist_version


def bin_dir(generation: Generation) -> Path:
    return build_root(generation) / "build" / "bin"


def is_built(generation: Generation) -> bool:
    root = build_root(generation)
    return (root / "built.json").is_file() and all(
        (bin_dir(generation) / target).is_file() for target in generation.targets
    )


def _run(argv: list[str], log_file: Path) -> None:
    with log_file.open("ab") as log:
        completed = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv[:3])} failed with {completed.returncode}; see {log_file}"
        )


def _fetch_sdist(generation: Generation, log_file: Path) -> Path:
    sdist_dir = cache_root() / "llama.cpp" / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{generation.sdist_version}.tar.gz"
    if not sdist.is_file():
        sdist_dir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(sdist_dir),
                f"llama-cpp-python=={generation.sdist_version}",
            ],
            log_file,
        )
    return sdist


def _extract(sdist: Path, dest: Path) -> None:
    """Unpack only the vendored llama.cpp tree, stripping the sdist's top folder."""
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) == 2 and parts[1].startswith("vendor/llama.cpp/"):
                member.name = parts[1]
                members.append(member)
        archive.extractall(dest, members=members, filter="data")


def ensure_build(
    generation: Generation, *, jobs: int = 2, say: Callable[[str], None] = print
) -> Path:
    """Return the generation's bin directory, building it first if the cache lacks it."""
    if is_built(generation):
        return bin_dir(generation)
    root = build_root(generation)
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / "build.log"
    say(f"building llama.cpp {generation.name} ({generation.sdist_version}); log: {log_file}")
    source = root / "src" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        _extract(_fetch_sdist(generation, log_file), root / "src")
    build = root / "build"
    _run(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            "-DGGML_RPC=ON",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=OFF",
        ],
        log_file,
    )
    _run(
        ["cmake", "--build", str(build), f"-j{jobs}", "--target", *generation.targets],
        log_file,
    )
    (root / "built.json").write_text(
        json.dumps({"generation": generation.name, "targets": list(generation.targets)})
    )
    return bin_dir(generation)


def main() -> None:
    """``python -m cluster.testbed.builds [GENERATION...]``: build (or find) the builds."""
    names = sys.argv[1:] or list(GENERATIONS)
    for name in names:
        if name not in GENERATIONS:
            raise SystemExit(f"unknown generation {name!r} (known: {', '.join(GENERATIONS)})")
        print(f"{name}: {ensure_build(GENERATIONS[name])}")


if __name__ == "__main__":
    main()
