"""The pinned llama-cpp-python sdist: fetch it, check it, read its commit, unpack its tree.

The sdist vendors llama.cpp under ``vendor/llama.cpp`` and carries the submodule's git
metadata under ``.git/modules/vendor/llama.cpp`` (one shallow commit). We unpack only the
vendored tree, drop its ``.git`` pointer (it would dangle), and read the commit from the
submodule's ``HEAD`` record inside the archive instead of asking git.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from cluster.builds.recipe import Generation
from cluster.errors import ClusterError

_HEAD = "/.git/modules/vendor/llama.cpp/HEAD"
_SHA = re.compile(r"^[0-9a-f]{40}$")


def fetch(generation: Generation, dest_dir: Path, log_file: Path) -> Path:
    """Download the sdist into ``dest_dir`` unless it is already there."""
    sdist = dest_dir / generation.sdist_name
    if sdist.is_file():
        return sdist
    dest_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        str(dest_dir),
        f"llama-cpp-python=={generation.sdist_version}",
    ]
    with log_file.open("ab") as log:
        completed = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0 or not sdist.is_file():
        raise ClusterError(f"pip download of {generation.sdist_name} failed; see {log_file}")
    return sdist


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def commit(sdist: Path) -> str:
    """The llama.cpp commit the sdist vendors (short, 7 hex digits), from its submodule HEAD."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.name.endswith(_HEAD) and member.name.count("/") == _HEAD.count("/"):
                stream = archive.extractfile(member)
                text = stream.read().decode("ascii", "replace").strip() if stream else ""
                if _SHA.match(text):
                    return text[:7]
    raise ClusterError(f"{sdist.name}: no llama.cpp submodule commit in the archive")


def extract_tree(sdist: Path, dest: Path) -> Path:
    """Unpack ``vendor/llama.cpp`` (without its ``.git`` pointer) into ``dest``; return it."""
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) != 2 or not parts[1].startswith("vendor/llama.cpp/"):
                continue
            if parts[1] == "vendor/llama.cpp/.git":
                continue
            member.name = parts[1].removeprefix("vendor/")
            members.append(member)
        archive.extractall(dest, members=members, filter="data")
    return dest / "llama.cpp"
