"""Build identity: digests read from a host, the one comparison rule, and health's verdicts."""

from __future__ import annotations

import hashlib

import pytest

from cluster.config.models import Inventory
from cluster.llamacpp.capabilities import parse_version
from cluster.llamacpp.identity import (
    Agreement,
    BuildIdentity,
    combined_digest,
    compare,
    parse_digests,
    read_command,
)
from cluster.orchestration.discovery import HostBuild
from cluster.orchestration.health import Level, evaluate
from cluster.orchestration.hostfacts import HostFacts


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ident(tag: str, protocol: str | None = "7.0.0") -> BuildIdentity:
    return BuildIdentity.from_files(
        {"llama-server": sha(tag + "s"), "ggml-rpc-server": sha(tag + "r")}, rpc_protocol=protocol
    )


def test_digests_are_read_through_the_container_prefix_with_the_dir_as_an_argument() -> None:
    argv = read_command(["toolbox", "run", "-c", "llama", "--"], "/opt/x y/bin")
    assert argv[:5] == ["toolbox", "run", "-c", "llama", "--"]
    assert argv[5:7] == ["sh", "-c"]
    assert argv[-1] == "/opt/x y/bin"  # a positional argument, never spliced into the script


def test_parse_digests_names_files_relative_to_the_install() -> None:
    out = (
        f"{sha('a')}  /opt/llama/bin/llama-server\n"
        f"{sha('b')}  /opt/llama/bin/../lib/libggml-base.so.0.9.4\n"
        "sha256sum: /opt/llama/bin/rpc-server: Permission denied\n"
        "garbage\n"
    )
    assert parse_digests(out) == {"llama-server": sha("a"), "lib/libggml-base.so.0.9.4": sha("b")}
    # The same files installed elsewhere compare equal.
    moved = out.replace("/opt/llama", "/home/u/.local/llama")
    assert combined_digest(parse_digests(moved)) == combined_digest(parse_digests(out))


def test_combined_digest_changes_with_any_file_and_with_the_file_set() -> None:
    files = {"llama-server": sha("a"), "ggml-rpc-server": sha("b")}
    base = combined_digest(files)
    assert base is not None and len(base) == 64
    assert combined_digest({**files, "ggml-rpc-server": sha("c")}) != base
    assert combined_digest({"llama-server": sha("a")}) != base
    assert combined_digest({}) is None


@pytest.mark.parametrize(
    ("identities", "agreement", "words"),
    [
        ({"evo": ident("a"), "bee": ident("a")}, Agreement.SAME, ["on every host"]),
        (
            {"evo": ident("a"), "bee": ident("b")},
            Agreement.DIFFER,
            ["not comparable", "evo=", "bee=", "same RPC protocol 7.0.0"],
        ),
        (
            {"evo": ident("a"), "bee": ident("b", "4.0.1")},
            Agreement.INCOMPATIBLE,
            ["bee 4.0.1", "evo 7.0.0"],
        ),
        (
            {"evo": ident("a"), "bee": BuildIdentity(note="sha256sum: not found")},
            Agreement.UNKNOWN,
            ["bee", "sha256sum: not found"],
        ),
        # The same files but protocols read differently cannot happen; a protocol read on
        # one host only is no disagreement.
        ({"evo": ident("a"), "bee": ident("a", None)}, Agreement.SAME, ["on every host"]),
    ],
)
def test_compare(
    identities: dict[str, BuildIdentity], agreement: Agreement, words: list[str]
) -> None:
    verdict, line = compare(identities)
    assert verdict is agreement
    for word in words:
        assert word in line
    assert "()" not in line and ";  " not in line  # no empty field, ever


def test_old_records_without_digests_read_as_unidentified() -> None:
    old = BuildIdentity.from_record({"commit": "0c1e570", "rpc_binary": "rpc-server"})
    assert not old.known
    assert old.describe() == "build unidentified (commit 0c1e570)"
    new = ident("a").with_protocol("7.0.0")
    assert BuildIdentity.from_record(new.record()) == new
    assert BuildIdentity.from_record(None).note == "no build recorded"


# --- health's verdicts on builds, from facts ----------------------------------------------

INVENTORY = Inventory.model_validate(
    {
        "cluster": {"head": "evo"},
        "hosts": {
            name: {
                "transport": "local",
                "link_address": address,
                "link_interface": "lo",
                "llama_bin_dir": "/opt/llama/bin",
            }
            for name, address in (("evo", "127.0.0.2"), ("bee", "127.0.0.3"))
        },
    }
)


def facts_with(name: str, found: BuildIdentity, version: str = "version: 0 (0c1e570)") -> HostFacts:
    binaries = frozenset({"llama-server", "ggml-rpc-server"})
    build = HostBuild(name, binaries, found, True, parse_version(version))
    return HostFacts(INVENTORY.hosts[name], ssh_s=0.01, build=build)


def build_checks(evo: HostFacts, bee: HostFacts) -> dict[str, tuple[Level, str, str]]:
    checks = evaluate(INVENTORY, {"evo": evo, "bee": bee})
    return {c.host: (c.level, c.value, c.detail) for c in checks if c.name == "build"}


def test_health_same_files_everywhere_is_ok() -> None:
    found = build_checks(facts_with("evo", ident("a")), facts_with("bee", ident("a")))
    assert {level for level, _, _ in found.values()} == {Level.OK}
    assert found["evo"][1] == f"{ident('a').short} rpc 7.0.0"


def test_health_different_files_same_protocol_warns_naming_hosts_and_digests() -> None:
    found = build_checks(facts_with("evo", ident("a")), facts_with("bee", ident("b")))
    assert {level for level, _, _ in found.values()} == {Level.WARN}
    detail = found["evo"][2]
    assert f"evo={ident('a').short}" in detail and f"bee={ident('b').short}" in detail
    assert "not comparable" in detail


def test_health_different_protocols_fail() -> None:
    found = build_checks(facts_with("evo", ident("a")), facts_with("bee", ident("b", "4.0.1")))
    assert {level for level, _, _ in found.values()} == {Level.FAIL}
    assert "bee 4.0.1" in found["bee"][2] and "evo 7.0.0" in found["bee"][2]


def test_health_an_unidentified_host_warns_never_silently_ok() -> None:
    unknown = BuildIdentity(note="no llama.cpp files in /opt/llama/bin")
    found = build_checks(facts_with("evo", ident("a")), facts_with("bee", unknown))
    assert found["bee"][0] is Level.WARN and found["bee"][1] == "unidentified"
    assert "no llama.cpp files" in found["bee"][2]
    assert found["evo"][0] is Level.WARN  # nobody can say the builds are the same


def test_health_an_unreadable_version_line_is_a_warning_not_a_crash() -> None:
    evo = facts_with("evo", ident("a"), version="Illegal instruction (core dumped)")
    checks = evaluate(INVENTORY, {"evo": evo, "bee": facts_with("bee", ident("a"))})
    version = [c for c in checks if c.name == "version"]
    assert [(c.host, c.level) for c in version] == [("evo", Level.WARN)]
    assert "Illegal instruction" in version[0].detail
