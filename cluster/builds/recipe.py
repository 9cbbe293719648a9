"""What a llama.cpp build is made from, as data: the pinned sdist, the backend, CMake options.

The same recipe drives the local builder (testbed, demo) and provisioning (the head builds,
the other hosts get copies). A recipe's ``provenance`` is what the cache records next to a
build; a cached build whose provenance differs from the wanted one is rebuilt.

Determinism: the builder never lets CMake look for git metadata (the sdist's submodule
pointer is removed, and ``GIT_CEILING_DIRECTORIES`` stops git from finding a repository
around the cache). The commit is read from the sdist's own submodule record and passed in
(``LLAMA_BUILD_COMMIT``), with build number 0, so the version line names the real upstream
commit wherever the build runs. Binaries are linked statically and source paths are mapped
to a fixed prefix, so the files (and their digests) do not depend on where the cache is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Backend = Literal["cpu", "cuda", "hip", "vulkan"]

# CMake options each backend adds; a user can add more (e.g. AMDGPU_TARGETS=gfx1151).
BACKEND_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "cpu": (),
    "cuda": ("-DGGML_CUDA=ON",),
    "hip": ("-DGGML_HIP=ON",),
    "vulkan": ("-DGGML_VULKAN=ON",),
}

BASE_OPTIONS: tuple[str, ...] = (
    "-DGGML_RPC=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_NUMBER=0",
)

# Where source paths point inside the binaries (assert messages carry __FILE__).
SOURCE_PREFIX = "/llama.cpp"


@dataclass(frozen=True)
class Generation:
    """One llama.cpp generation and the llama-cpp-python sdist that carries it."""

    name: str
    sdist_version: str
    rpc_target: str

    @property
    def targets(self) -> tuple[str, ...]:
        return ("llama-server", self.rpc_target, "llama-bench")

    @property
    def sdist_name(self) -> str:
        return f"llama_cpp_python-{self.sdist_version}.tar.gz"


GENERATIONS: Mapping[str, Generation] = {
    "current": Generation("current", "0.3.36", "ggml-rpc-server"),
    "legacy": Generation("legacy", "0.3.30", "rpc-server"),
}


@dataclass(frozen=True)
class Recipe:
    """A generation built for one backend with the user's extra CMake options."""

    generation: Generation
    backend: Backend = "cpu"
    extra_options: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cache_name(self) -> str:
        """The folder of this build in a cache: ``0.3.36``, or ``0.3.36-hip-1a2b3c4d`` for
        another backend or extra options (so builds of one sdist never overwrite another)."""
        name = self.generation.sdist_version
        if self.backend != "cpu" or self.extra_options:
            options = hashlib.sha256("\0".join(self.extra_options).encode()).hexdigest()[:8]
            name = f"{name}-{self.backend}-{options}"
        return name

    def configure_argv(self, source: Path, build: Path, commit: str) -> list[str]:
        """``cmake -S ... -B ...`` for this recipe; ``commit`` is the sdist's llama.cpp commit."""
        prefix_map = (
            f"-ffile-prefix-map={source}={SOURCE_PREFIX}"
            f" -ffile-prefix-map={build}={SOURCE_PREFIX}-build"
        )
        return [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            *BASE_OPTIONS,
            f"-DLLAMA_BUILD_COMMIT={commit}",
            f"-DCMAKE_C_FLAGS={prefix_map}",
            f"-DCMAKE_CXX_FLAGS={prefix_map}",
            *BACKEND_OPTIONS[self.backend],
            *self.extra_options,
        ]

    def build_argv(self, build: Path, jobs: int) -> list[str]:
        return ["cmake", "--build", str(build), f"-j{jobs}", "--target", *self.generation.targets]

    def provenance(self, sdist_sha256: str, commit: str) -> dict[str, object]:
        """What the cache records about a build; any change means a rebuild."""
        return {
            "generation": self.generation.name,
            "sdist": self.generation.sdist_name,
            "sdist_sha256": sdist_sha256,
            "commit": commit,
            "backend": self.backend,
            "cmake_options": [*BASE_OPTIONS, *BACKEND_OPTIONS[self.backend], *self.extra_options],
            "targets": list(self.generation.targets),
        }
