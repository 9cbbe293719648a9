"""clusterctl provision on the real testbed (Fabric over the hosts' sshd): one build on
every host, verified by digest, idempotent, and health sees what it did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import Cluster, fake_sdist

from cluster.builds.local import cache_root
from cluster.builds.recipe import Generation, Recipe
from cluster.config.loader import load_inventory
from cluster.errors import HostKeyError
from cluster.provision.remote import FabricRemote
from cluster.provision.run import Outcome, provision

pytestmark = pytest.mark.testbed


def provisioned_inventory(cluster: Cluster, root: Path, work_dir: Path | None = None) -> None:
    """hosts.toml with an empty llama_bin_dir per host and a [build] table."""
    bins = {name: str(root / f"{name}-bin") for name in cluster.bed.names}
    cluster.bed.write_inventory(cluster.hosts_file, bins)
    # The build host finds the testbed's cached build: its cache is the controller's.
    table = f'\n[build]\ngeneration = "current"\nwork_dir = "{work_dir or cache_root()}"\n'
    with cluster.hosts_file.open("a") as handle:
        handle.write(table)


def build_checks(cluster: Cluster) -> dict[str, dict[str, str]]:
    result = cluster.run("health", "--quick", "--json", timeout=120)
    checks = json.loads(result.stdout)["checks"]
    return {c["host"]: c for c in checks if c["name"] == "build"}


def test_provision_puts_one_build_on_every_host(
    cluster: Cluster, tmp_path: Path, legacy_bin: Path
) -> None:
    provisioned_inventory(cluster, tmp_path)
    before = build_checks(cluster)
    assert {c["level"] for c in before.values()} == {"warn"}  # nothing there to identify

    dry = cluster.run("provision", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "evo: would: install ggml-rpc-server, llama-bench, llama-server" in dry.stdout
    assert not (tmp_path / "evo-bin").exists() and not (tmp_path / "bee-bin").exists()

    first = cluster.run("provision")
    assert first.returncode == 0, first.stderr
    assert "already built on evo" in first.stdout
    for name in ("evo", "bee"):
        assert f"{name}: installed: installed build " in first.stdout
    short = first.stdout.split("every host now runs build ")[1].split()[0]
    after = build_checks(cluster)
    assert {(c["level"], c["value"]) for c in after.values()} == {("ok", f"{short} rpc 7.0.0")}

    again = cluster.run("provision")
    assert again.returncode == 0, again.stderr
    assert f"nothing to do: every host already runs build {short}" in again.stdout
    assert "installed" not in again.stdout

    # The legacy build on bee: health names the difference.
    bee_bin = tmp_path / "bee-bin"
    for old in bee_bin.iterdir():
        if old.is_file():
            old.unlink()
    for name in ("llama-server", "rpc-server", "llama-bench"):
        shutil.copy2(legacy_bin / name, bee_bin / name)
    mixed = build_checks(cluster)
    assert mixed["bee"]["level"] == "fail"
    assert "bee 4.0.1" in mixed["bee"]["detail"] and "evo 7.0.0" in mixed["bee"]["detail"]

    fixed = cluster.run("provision")
    assert fixed.returncode == 0, fixed.stderr
    assert "evo: unchanged" in fixed.stdout
    assert (
        "bee: installed: installed build" in fixed.stdout and "retired rpc-server" in fixed.stdout
    )
    assert (bee_bin / ".clusterctl-previous" / "rpc-server").is_file()
    assert {(c["level"], c["value"]) for c in build_checks(cluster).values()} == {
        ("ok", f"{short} rpc 7.0.0")
    }


def test_the_build_host_builds_from_the_sent_sdist_once(cluster: Cluster, tmp_path: Path) -> None:
    work = tmp_path / "head-cache"
    provisioned_inventory(cluster, tmp_path, work)
    inventory = load_inventory(cluster.hosts_file)
    recipe = Recipe(Generation("fake", "0.0.1", "ggml-rpc-server"))
    archive = fake_sdist(tmp_path, "0.0.1")
    said: list[str] = []
    report = provision(
        inventory, recipe, build_host="evo", work_dir=str(work), archive=archive, say=said.append
    )
    assert report.build is not None and report.build.made_now
    assert any("sending llama_cpp_python-0.0.1.tar.gz" in line for line in said)
    assert [r.outcome for r in report.hosts] == [Outcome.INSTALLED, Outcome.INSTALLED]
    built = work / "llama.cpp" / "0.0.1"
    recorded = json.loads((built / "built.json").read_text())
    assert recorded["commit"] == "0123456" and recorded["generation"] == "fake"
    assert not (built / "src" / "llama.cpp" / ".git").exists()
    server = tmp_path / "bee-bin" / "llama-server"
    assert server.read_bytes() == (built / "build" / "bin" / "llama-server").read_bytes()

    again = provision(inventory, recipe, build_host="evo", work_dir=str(work), archive=archive)
    assert again.build is not None and not again.build.made_now
    assert [r.outcome for r in again.hosts] == [Outcome.UNCHANGED, Outcome.UNCHANGED]


def test_one_host_failing_is_its_own_result(cluster: Cluster, tmp_path: Path) -> None:
    provisioned_inventory(cluster, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    text = cluster.hosts_file.read_text().replace(f'"{tmp_path}/bee-bin"', f'"{blocker}/bee-bin"')
    cluster.hosts_file.write_text(text)
    result = cluster.run("provision")
    assert result.returncode == 4
    assert "evo: installed: installed build" in result.stdout
    assert (
        f"bee: failed: bee: cannot create {blocker}/bee-bin/.clusterctl-incoming" in result.stdout
    )
    assert "Traceback" not in result.stderr


def test_fabric_refuses_an_unknown_host_key(cluster: Cluster, tmp_path: Path) -> None:
    provisioned_inventory(cluster, tmp_path)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = load_inventory(cluster.hosts_file)
    host = inventory.hosts["bee"].model_copy(update={"known_hosts": empty})
    remote = FabricRemote(host)
    with pytest.raises(HostKeyError, match="not in known_hosts"):
        remote.run(["true"])
    remote.close()
