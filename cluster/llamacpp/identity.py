"""A llama.cpp build's identity: the digests of the files a host would run.

The version line cannot identify a build: the same sources print ``build 1, commit
0c1e570``, ``build 0, commit unknown`` or ``build 0, commit 0c1e570`` depending on how they
were unpacked, and distro packages or release archives carry no git metadata at all. So a
build is named by the SHA-256 of its files (the serving binaries and the llama.cpp/ggml
shared libraries beside them), read on the host through its container prefix, plus the
RPC protocol version (what decides whether two hosts can talk) and the version line (for
people). ``read_command`` builds the argv, ``parse_digests`` reads its output, and
``compare`` is the one rule every command uses:

- identical files on every host: ``same``;
- different files, one RPC protocol: ``differ`` (results are not comparable);
- different RPC protocols: ``incompatible``;
- a host whose files could not be read: ``unknown``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

# Files a host runs: the serving binaries and the shared libraries they load (builds with
# BUILD_SHARED_LIBS keep them beside the binaries or in ../lib). Symlinks to a library are
# skipped; the file they point to is hashed once.
DIGEST_SCRIPT = r"""
dir=$1
for f in "$dir/llama-server" "$dir/ggml-rpc-server" "$dir/rpc-server" \
         "$dir"/libggml*.so* "$dir"/libllama*.so* "$dir"/libmtmd*.so* \
         "$dir"/../lib/libggml*.so* "$dir"/../lib/libllama*.so* "$dir"/../lib/libmtmd*.so*; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  sha256sum -- "$f" || exit 2
done
exit 0
"""

SHORT = 12


def read_command(command_prefix: list[str], bin_dir: str) -> list[str]:
    """argv that prints ``SHA256  PATH`` for every file of the build in ``bin_dir``."""
    return [*command_prefix, "sh", "-c", DIGEST_SCRIPT, "clusterctl", bin_dir]


def parse_digests(stdout: str) -> dict[str, str]:
    """``sha256sum`` lines to {file name: digest}; the name is relative to the bin dir's
    parent for libraries in ../lib, so two installs in different places compare equal."""
    files: dict[str, str] = {}
    for line in stdout.splitlines():
        digest, _, path = line.partition("  ")
        if len(digest) != 64 or not path:
            continue
        parts = path.rstrip("/").split("/")
        name = "/".join(parts[-2:]) if len(parts) >= 2 and parts[-2] == "lib" else parts[-1]
        files[name] = digest.lower()
    return files


def combined_digest(files: Mapping[str, str]) -> str | None:
    """One digest over every file (name and content); None when there are no files."""
    if not files:
        return None
    text = "\n".join(f"{name} {digest}" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


class BuildIdentity(BaseModel):
    """What one host's build is: file digests, RPC protocol and the version line."""

    model_config = ConfigDict(frozen=True)

    files: dict[str, str] = {}
    digest: str | None = None
    rpc_protocol: str | None = None
    version: str | None = None
    note: str = ""  # why it could not be read, when it could not

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, str],
        *,
        rpc_protocol: str | None = None,
        version: str | None = None,
        note: str = "",
    ) -> BuildIdentity:
        return cls(
            files=dict(files),
            digest=combined_digest(files),
            rpc_protocol=rpc_protocol,
            version=version,
            note=note,
        )

    @classmethod
    def from_record(cls, record: object) -> BuildIdentity:
        """Read what a store record holds (older records: commit and protocol only)."""
        if not isinstance(record, Mapping):
            return cls(note="no build recorded")
        data: dict[str, Any] = dict(record)
        version = data.get("version")
        if version is None and data.get("commit"):
            version = f"commit {data['commit']}"
        files = data.get("files") if isinstance(data.get("files"), dict) else {}
        return cls(
            files=files or {},
            digest=data.get("digest") or combined_digest(files or {}),
            rpc_protocol=data.get("rpc_protocol"),
            version=version,
            note=str(data.get("note") or ""),
        )

    @property
    def known(self) -> bool:
        return self.digest is not None

    @property
    def short(self) -> str:
        return self.digest[:SHORT] if self.digest else "unidentified"

    def with_protocol(self, protocol: str | None) -> BuildIdentity:
        return self if protocol is None else self.model_copy(update={"rpc_protocol": protocol})

    def describe(self) -> str:
        """One line for tables and reports: ``build 3f2a9c81d0e4, RPC 7.0.0 (version: ...)``."""
        parts = [f"build {self.short}"]
        if self.rpc_protocol:
            parts.append(f"RPC {self.rpc_protocol}")
        text = ", ".join(parts)
        return f"{text} ({self.version})" if self.version else text

    def record(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Agreement(StrEnum):
    SAME = "same"
    DIFFER = "differ"
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"


def compare(identities: Mapping[str, BuildIdentity]) -> tuple[Agreement, str]:
    """The verdict over every host's identity, and one line that names what differs."""
    protocols = {name: i.rpc_protocol for name, i in identities.items() if i.rpc_protocol}
    if len(set(protocols.values())) > 1:
        listing = ", ".join(f"{name} {p}" for name, p in sorted(protocols.items()))
        return Agreement.INCOMPATIBLE, f"hosts speak different RPC protocols: {listing}"
    unknown = sorted(name for name, i in identities.items() if not i.known)
    digests = {name: i.short for name, i in identities.items() if i.known}
    if len(set(digests.values())) > 1:
        listing = ", ".join(f"{name}={d}" for name, d in sorted(digests.items()))
        proto = next(iter(protocols.values()), None)
        same = f"same RPC protocol {proto}" if proto else "RPC protocol not read"
        return (
            Agreement.DIFFER,
            f"hosts run different llama.cpp files ({listing}; {same}): results are not comparable",
        )
    if unknown:
        notes = "; ".join(f"{name}: {identities[name].note or 'no files read'}" for name in unknown)
        return Agreement.UNKNOWN, f"build not identified on {', '.join(unknown)} ({notes})"
    digest = next(iter(digests.values()), "none")
    return Agreement.SAME, f"build {digest} on every host"
