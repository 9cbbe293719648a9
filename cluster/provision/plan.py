"""What provisioning does on each host, decided from digests alone (pure).

The build is a set of files with their SHA-256 (``llama-server``, the RPC server, and
``llama-bench``). A host's bin directory holds some llama.cpp files now; the plan installs
every build file whose digest differs or is missing, and retires the llama.cpp files that
are not part of the build (an old ``rpc-server`` beside a new ``ggml-rpc-server``, the
shared libraries of a dynamic build), since they are part of what identifies a build.
A host already at the build's digests, with nothing to retire, is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cluster.llamacpp.identity import parse_digests

# The llama.cpp files provisioning owns in a bin directory (the build identity's files
# and llama-bench); anything else there is the user's and is never touched.
INSTALLED_SCRIPT = r"""
dir=$1
[ -d "$dir" ] || exit 0
for f in "$dir/llama-server" "$dir/ggml-rpc-server" "$dir/rpc-server" "$dir/llama-bench" \
         "$dir"/libggml*.so* "$dir"/libllama*.so* "$dir"/libmtmd*.so*; do
  if [ -L "$f" ]; then echo "symlink  $f"; continue; fi
  [ -f "$f" ] || continue
  sha256sum -- "$f" || exit 2
done
exit 0
"""


def installed_command(bin_dir: str) -> list[str]:
    return ["sh", "-c", INSTALLED_SCRIPT, "clusterctl", bin_dir]


def parse_installed(stdout: str) -> dict[str, str]:
    """{file name: digest}; a symlink (a library's alias) has the digest ``symlink``."""
    files = parse_digests(stdout)
    for line in stdout.splitlines():
        kind, _, path = line.partition("  ")
        if kind == "symlink" and path:
            files[path.rstrip("/").rsplit("/", 1)[-1]] = "symlink"
    return files


class Action(StrEnum):
    UNCHANGED = "unchanged"
    INSTALL = "install"


@dataclass(frozen=True)
class HostPlan:
    host: str
    bin_dir: str
    action: Action
    install: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()
    had: dict[str, str] = field(default_factory=dict)

    def describe(self, short_build: str) -> str:
        if self.action is Action.UNCHANGED:
            return f"unchanged: already build {short_build} in {self.bin_dir}"
        parts = [f"install {', '.join(self.install)}"] if self.install else []
        if self.retire:
            parts.append(f"retire {', '.join(self.retire)} to .clusterctl-previous/")
        before = "empty" if not self.had else f"{len(self.had)} llama.cpp file(s) differ"
        return f"{'; '.join(parts)} in {self.bin_dir} ({before} now)"


def plan_host(
    host: str, bin_dir: str, wanted: Mapping[str, str], had: Mapping[str, str]
) -> HostPlan:
    """Install what differs, retire what the build does not have, or do nothing."""
    install = tuple(sorted(name for name, digest in wanted.items() if had.get(name) != digest))
    retire = tuple(sorted(name for name in had if name not in wanted))
    if not install and not retire:
        return HostPlan(host, bin_dir, Action.UNCHANGED, had=dict(had))
    return HostPlan(host, bin_dir, Action.INSTALL, install, retire, dict(had))
