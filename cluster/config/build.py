"""The ``[build]`` table of hosts.toml: the one llama.cpp build every host runs.

``clusterctl provision`` makes this build on the build host and installs it into every
host's ``llama_bin_dir``. The default is the current generation on the CPU backend; real
Strix Halo hosts ask for ``backend = "hip"`` (with ``cmake_options =
["-DAMDGPU_TARGETS=gfx1151"]``) or ``"vulkan"``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.builds.recipe import GENERATIONS, Recipe

_CMAKE_OPTION = re.compile(r"^-D[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?=[^\x00\n]*$")


class BuildConfig(BaseModel):
    """Which pinned sources, which backend, which extra CMake options, built where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: Literal["current", "legacy"] = "current"
    backend: Literal["cpu", "cuda", "hip", "vulkan"] = "cpu"
    cmake_options: list[str] = []
    # Where it is built (default: the head) and where builds are kept there (relative
    # paths are under the login home, as on the controller).
    build_host: str | None = None
    work_dir: str = Field(default=".cache/clusterctl", min_length=1)
    jobs: int | None = Field(default=None, ge=1)

    @field_validator("cmake_options")
    @classmethod
    def _options(cls, options: list[str]) -> list[str]:
        for option in options:
            if not _CMAKE_OPTION.match(option):
                example = "-DAMDGPU_TARGETS=gfx1151"
                raise ValueError(f"{option!r} is not a CMake option such as {example}")
        return options

    def recipe(self) -> Recipe:
        return Recipe(GENERATIONS[self.generation], self.backend, tuple(self.cmake_options))
