"""Build llama.cpp on this machine into the cache, from the pinned sdist.

The cache is ``$CLUSTERCTL_CACHE`` or ``~/.cache/clusterctl``::

    llama.cpp/sdist/llama_cpp_python-VERSION.tar.gz
    llama.cpp/VERSION[-BACKEND-OPTS]/src/llama.cpp/...      the vendored tree, no git metadata
    llama.cpp/VERSION[-BACKEND-OPTS]/build/bin/{llama-server,RPC-BINARY,llama-bench}
    llama.cpp/VERSION[-BACKEND-OPTS]/built.json             the provenance, written last

``built.json`` records what the build was made from (sdist and its sha256, commit, backend,
CMake options, targets); a build whose record differs from the wanted recipe, or whose
files are missing, is made again from scratch. A build takes about ten minutes on two
cores; a cached one costs a hash of the sdist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cluster.builds import sdist
from cluster.builds.recipe import GENERATIONS, Generation, Recipe

__all__ = ["GENERATIONS", "Generation", "Recipe", "bin_dir", "build_root", "ensure_build"]
from cluster.errors import ClusterError


def cache_root() -> Path:
    return Path(os.environ.get("CLUSTERCTL_CACHE") or Path.home() / ".cache" / "clusterctl")


def build_root(recipe: Recipe | Generation) -> Path:
    return cache_root() / "llama.cpp" / _recipe(recipe).cache_name


def bin_dir(recipe: Recipe | Generation) -> Path:
    return build_root(recipe) / "build" / "bin"


def _recipe(recipe: Recipe | Generation) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else Recipe(recipe)


def recorded_provenance(recipe: Recipe | Generation) -> dict[str, object] | None:
    """What the cache says the build was made from, or None when there is no whole build."""
    recipe = _recipe(recipe)
    record = build_root(recipe) / "built.json"
    try:
        provenance = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(provenance, dict):
        return None
    if not all((bin_dir(recipe) / t).is_file() for t in recipe.generation.targets):
        return None
    return provenance


def _run(argv: list[str], log_file: Path, env: dict[str, str]) -> None:
    with log_file.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        completed = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False, env=env)
    if completed.returncode != 0:
        command = " ".join(argv[:3])
        raise ClusterError(f"{command} failed with {completed.returncode}; see {log_file}")


def _build_env(root: Path) -> dict[str, str]:
    """The controller's environment, with git kept from finding any repository around us."""
    env = dict(os.environ)
    env["GIT_CEILING_DIRECTORIES"] = str(root)
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


def ensure_build(
    recipe: Recipe | Generation, *, jobs: int | None = None, say: Callable[[str], None] = print
) -> Path:
    """Return the recipe's bin directory, (re)building it when the cache does not match."""
    recipe = _recipe(recipe)
    root = build_root(recipe)
    sdist_dir = cache_root() / "llama.cpp" / "sdist"
    root.mkdir(parents=True, exist_ok=True)
    log_file = root / "build.log"
    archive = sdist.fetch(recipe.generation, sdist_dir, log_file)
    commit = sdist.commit(archive)
    wanted = recipe.provenance(sdist.sha256(archive), commit)
    recorded = recorded_provenance(recipe)
    if recorded == wanted:
        return bin_dir(recipe)
    why = "not built yet" if recorded is None else "its recorded provenance differs"
    say(
        f"building llama.cpp {recipe.generation.name} ({recipe.generation.sdist_version}, "
        f"commit {commit}, {recipe.backend}): {why}; log: {log_file}"
    )
    for stale in ("built.json", "src", "build"):
        path = root / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    source = sdist.extract_tree(archive, root / "src")
    build = root / "build"
    env = _build_env(root)
    _run(recipe.configure_argv(source, build, commit), log_file, env)
    _run(recipe.build_argv(build, jobs or os.cpu_count() or 2), log_file, env)
    (root / "built.json").write_text(json.dumps(wanted, indent=2) + "\n")
    return bin_dir(recipe)


def main() -> None:
    """``python -m cluster.builds.local [GENERATION...]``: build (or find) the builds."""
    names = sys.argv[1:] or list(GENERATIONS)
    for name in names:
        if name not in GENERATIONS:
            raise SystemExit(f"unknown generation {name!r} (known: {', '.join(GENERATIONS)})")
        try:
            print(f"{name}: {ensure_build(GENERATIONS[name])}")
        except ClusterError as exc:
            raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
