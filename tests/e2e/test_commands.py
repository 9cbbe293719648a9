"""The README's demo and the testbed commands, run as a person runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import clusterctl

from cluster.testbed.network import find_leftovers


@pytest.mark.slow
def test_demo_runs_the_main_job_and_leaves_nothing(current_bin: Path) -> None:
    result = clusterctl("demo")
    assert result.returncode == 0, result.stderr
    steps = ("1. health", "2. up demo-tiny", "3. bench", "4. screen demo-shapes", "5. status")
    for step in (*steps, "6. down"):
        assert step in result.stderr
    assert "serving at http://127.0.0.1:18080 after 1 attempt(s)" in result.stdout
    assert "reusing the running demo-tiny" in result.stderr  # the screen did not reload
    assert "1 case: 1 pass, 0 fail" in result.stdout
    assert "14 cases: 14 pass, 0 fail" in result.stdout
    assert "evo: llama-server: terminated" in result.stdout
    leftovers = subprocess.run(["pgrep", "-f", "clusterctl/demo"], capture_output=True, text=True)
    assert leftovers.stdout == ""


@pytest.mark.testbed
def test_testbed_commands_make_a_cluster_health_passes_and_down_removes_it(
    tmp_path: Path, current_bin: Path
) -> None:
    root = tmp_path / "tb"
    up = clusterctl("testbed", "up", "--root", str(root), "--hosts", "2")
    assert up.returncode == 0, up.stderr
    hosts_file = Path(up.stdout.strip())
    tag = json.loads((root / "testbed.json").read_text())["spec"]["tag"]
    try:
        env = {"CLUSTERCTL_CONFIG": str(hosts_file)}
        health = clusterctl("health", "testbed-tiny", "--json", "--quick", env=env)
        assert health.returncode == 0, health.stdout
    finally:
        down = clusterctl("testbed", "down", "--root", str(root))
    assert down.returncode == 0, down.stderr
    assert find_leftovers(tag).get(tag, []) == []
