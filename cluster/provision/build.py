"""Making the recipe's build on the build host, from the sdist the controller sends.

The controller keeps the pinned sdist in its cache and sends it to the build host (hosts
need no package index). The build host unpacks only the vendored tree, configures and
builds with the recipe's CMake argv through its container prefix (where its toolchain
lives), and records the provenance in ``built.json`` beside the build, exactly as the local
builder does (``cluster.builds.local``): the same layout, so a build host whose cache
already holds this build (the same provenance) does not build again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.builds import sdist
from cluster.builds.recipe import Recipe
from cluster.config.models import HostConfig
from cluster.errors import ClusterError
from cluster.llamacpp import identity
from cluster.provision.remote import Remote

EXTRACT_SCRIPT = r"""
set -e
archive=$1; dest=$2; top=$3
rm -rf -- "$dest"; mkdir -p -- "$dest"
tar -xzf "$archive" -C "$dest" --strip-components=3 \
  --exclude="$top/vendor/llama.cpp/.git" "$top/vendor/llama.cpp"
"""
WRITE_SCRIPT = r"""printf '%s\n' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1" """
ABSOLUTE_SCRIPT = r"""mkdir -p -- "$1" && cd -- "$1" && pwd -P"""


@dataclass(frozen=True)
class HostBuildDir:
    """A build on the build host: where its binaries are and what they are."""

    host: str
    bin_dir: str
    files: dict[str, str]  # the recipe's targets and their SHA-256
    identity: identity.BuildIdentity
    made_now: bool


def _check(remote: Remote, argv: list[str], what: str, timeout: float | None = 600) -> str:
    result = remote.run(argv, timeout=timeout)
    if result.exit_status != 0:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ClusterError(f"{remote.name}: {what} failed ({result.exit_status}): {tail[0]}")
    return result.stdout


def _digests(remote: Remote, bin_dir: str, names: tuple[str, ...]) -> dict[str, str]:
    paths = [f"{bin_dir}/{name}" for name in names]
    out = _check(remote, ["sha256sum", "--", *paths], f"sha256sum in {bin_dir}")
    return identity.parse_digests(out)


def _recorded(remote: Remote, root: str) -> object:
    result = remote.run(["cat", "--", f"{root}/built.json"])
    if result.exit_status != 0:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def find_or_build(
    remote: Remote,
    host: HostConfig,
    recipe: Recipe,
    archive: Path,
    *,
    work_dir: str,
    jobs: int | None,
    dry_run: bool,
    say: Callable[[str], None],
) -> HostBuildDir | None:
    """The build on ``host``, made first unless its recorded provenance matches.

    With ``dry_run`` nothing is made: None when the build host has no such build yet.
    """
    commit = sdist.commit(archive)
    wanted = recipe.provenance(sdist.sha256(archive), commit)
    base = _check(remote, ["sh", "-c", ABSOLUTE_SCRIPT, "clusterctl", work_dir], "mkdir")
    root = f"{base.strip()}/llama.cpp/{recipe.cache_name}"
    bin_dir = f"{root}/build/bin"
    targets = recipe.generation.targets
    if _recorded(remote, root) == wanted:
        files = _digests(remote, bin_dir, targets)
        if set(files) == set(targets):
            return _result(remote, bin_dir, files, made_now=False)
    if dry_run:
        return None
    say(
        f"{host.name}: building llama.cpp {recipe.generation.sdist_version} ({commit}, "
        f"{recipe.backend}) in {root}"
    )
    sdist_dir = f"{base.strip()}/llama.cpp/sdist"
    remote_archive = f"{sdist_dir}/{archive.name}"
    have = remote.run(["sha256sum", "--", remote_archive])
    if not have.stdout.startswith(wanted["sdist_sha256"]):  # type: ignore[arg-type]
        _check(remote, ["mkdir", "-p", "--", sdist_dir], "mkdir")
        say(f"{host.name}: sending {archive.name}")
        remote.put(archive, remote_archive)
    _check(remote, ["rm", "-rf", "--", f"{root}/built.json", f"{root}/build"], "clean")
    top = archive.name.removesuffix(".tar.gz")
    source = f"{root}/src/llama.cpp"
    _check(remote, ["sh", "-c", EXTRACT_SCRIPT, "clusterctl", remote_archive, source, top], "tar")
    nproc = jobs or int(_check(remote, ["nproc"], "nproc").strip() or "1")
    env = ["env", f"GIT_CEILING_DIRECTORIES={root}"]
    build = Path(f"{root}/build")
    configure = recipe.configure_argv(Path(source), build, commit)
    _check(remote, [*host.command_prefix, *env, *configure], "cmake configure", timeout=1800)
    make = recipe.build_argv(build, nproc)
    _check(remote, [*host.command_prefix, *env, *make], "cmake build", timeout=None)
    record = json.dumps(wanted, indent=2)
    _check(remote, ["sh", "-c", WRITE_SCRIPT, "clusterctl", f"{root}/built.json", record], "record")
    return _result(remote, bin_dir, _digests(remote, bin_dir, targets), made_now=True)


def _result(remote: Remote, bin_dir: str, files: dict[str, str], *, made_now: bool) -> HostBuildDir:
    out = _check(remote, identity.read_command([], bin_dir), "digests")
    found = identity.BuildIdentity.from_files(identity.parse_digests(out))
    return HostBuildDir(remote.name, bin_dir, files, found, made_now)
