"""Provisioning decisions from digests (pure) and the install script on real files."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from cluster.provision.plan import Action, installed_command, parse_installed, plan_host
from cluster.provision.run import INSTALL_SCRIPT

BUILD = {"llama-server": "a" * 64, "ggml-rpc-server": "b" * 64, "llama-bench": "c" * 64}


def test_an_empty_host_gets_every_file() -> None:
    plan = plan_host("bee", "/opt/bin", BUILD, {})
    assert plan.action is Action.INSTALL
    assert plan.install == ("ggml-rpc-server", "llama-bench", "llama-server")
    assert plan.retire == ()
    assert "empty now" in plan.describe("abc")


def test_a_host_at_the_build_is_left_alone() -> None:
    plan = plan_host("bee", "/opt/bin", BUILD, dict(BUILD))
    assert plan.action is Action.UNCHANGED
    assert plan.describe("abc") == "unchanged: already build abc in /opt/bin"


def test_only_what_differs_is_sent_and_files_of_other_builds_are_retired() -> None:
    legacy = {"llama-server": "d" * 64, "rpc-server": "e" * 64, "llama-bench": "c" * 64}
    plan = plan_host("bee", "/opt/bin", BUILD, {**legacy, "libggml.so": "symlink"})
    assert plan.action is Action.INSTALL
    assert plan.install == ("ggml-rpc-server", "llama-server")
    assert plan.retire == ("libggml.so", "rpc-server")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_installed_files_are_read_without_touching_other_files(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_bytes(b"server")
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / "libggml.so.0").write_bytes(b"lib")
    (tmp_path / "libggml.so").symlink_to("libggml.so.0")
    out = subprocess.run(installed_command(str(tmp_path)), capture_output=True, text=True)
    assert parse_installed(out.stdout) == {
        "llama-server": sha(tmp_path / "llama-server"),
        "libggml.so.0": sha(tmp_path / "libggml.so.0"),
        "libggml.so": "symlink",
    }
    missing = subprocess.run(installed_command(str(tmp_path / "nope")), capture_output=True)
    assert missing.returncode == 0 and missing.stdout == b""


def test_install_swaps_files_in_and_keeps_what_it_replaced(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_bytes(b"old server")
    (tmp_path / "rpc-server").write_bytes(b"old rpc")
    (tmp_path / "notes.txt").write_text("the user's")
    incoming = tmp_path / ".clusterctl-incoming"
    incoming.mkdir()
    (incoming / "llama-server").write_bytes(b"new server")
    (incoming / "ggml-rpc-server").write_bytes(b"new rpc")
    argv = ["sh", "-c", INSTALL_SCRIPT, "clusterctl", str(tmp_path)]
    done = subprocess.run([*argv, "+ggml-rpc-server", "+llama-server", "-rpc-server"], check=False)
    assert done.returncode == 0
    assert (tmp_path / "llama-server").read_bytes() == b"new server"
    assert (tmp_path / "ggml-rpc-server").read_bytes() == b"new rpc"
    assert not (tmp_path / "rpc-server").exists()
    previous = tmp_path / ".clusterctl-previous"
    assert sorted(p.name for p in previous.iterdir()) == ["llama-server", "rpc-server"]
    assert (previous / "llama-server").read_bytes() == b"old server"
    assert (tmp_path / "notes.txt").read_text() == "the user's"
    assert not incoming.exists()
    assert (tmp_path / "llama-server").stat().st_mode & 0o777 == 0o755


def test_an_install_that_stops_halfway_leaves_whole_files(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_bytes(b"old server")
    (tmp_path / "ggml-rpc-server").write_bytes(b"old rpc")
    incoming = tmp_path / ".clusterctl-incoming"
    incoming.mkdir()
    (incoming / "ggml-rpc-server").write_bytes(b"new rpc")  # llama-server never arrived
    argv = ["sh", "-c", INSTALL_SCRIPT, "clusterctl", str(tmp_path)]
    done = subprocess.run([*argv, "+ggml-rpc-server", "+llama-server"], check=False)
    assert done.returncode != 0
    assert (tmp_path / "ggml-rpc-server").read_bytes() == b"new rpc"
    assert (tmp_path / "llama-server").read_bytes() == b"old server"  # still a working file
