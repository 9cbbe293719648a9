"""The command line's contract: one-line errors, documented exit codes, env precedence.

These run the real ``python -m cluster`` in a subprocess; none needs root or a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import clusterctl, one_error_line

REPO = Path(__file__).resolve().parent.parent.parent

HOSTS = """
[cluster]
head = "a"

[hosts.a]
transport = "local"
link_address = "127.0.0.2"
link_interface = "lo"
llama_bin_dir = "/nonexistent/bin"
run_dir = "{run}/a"

[hosts.b]
transport = "local"
link_address = "127.0.0.3"
link_interface = "lo"
llama_bin_dir = "/nonexistent/bin"
run_dir = "{run}/b"
"""

PROFILE = 'model = "/nonexistent/m.gguf"\nrpc_hosts = ["a", "b"]\ntensor_split = "1/1"\n'


@pytest.fixture
def config(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "hosts.toml").write_text(HOSTS.format(run=tmp_path / "run"))
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.toml").write_text(PROFILE)
    return {
        "CLUSTERCTL_CONFIG": str(tmp_path / "hosts.toml"),
        "CLUSTERCTL_STATE_DIR": str(tmp_path / "state"),
    }


def test_bad_value_exits_2_naming_file_and_key(tmp_path: Path, config: dict[str, str]) -> None:
    path = Path(config["CLUSTERCTL_CONFIG"])
    path.write_text(
        path.read_text().replace(
            'link_interface = "lo"', 'link_interface = "lo"\nrpc_port = 99999', 1
        )
    )
    result = clusterctl("config", "check", env=config)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(f"error: {path}: hosts.a.rpc_port: ")
    assert "less than or equal to 65535" in line


def test_unknown_key_and_missing_file(tmp_path: Path, config: dict[str, str]) -> None:
    path = Path(config["CLUSTERCTL_CONFIG"])
    path.write_text(path.read_text() + "\n[cluster2]\nx = 1\n")
    result = clusterctl("status", env=config)
    assert result.returncode == 2
    assert one_error_line(result) == f"error: {path}: cluster2: unknown key"
    missing = clusterctl("health", env={"CLUSTERCTL_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.returncode == 2
    assert one_error_line(missing) == f"error: {tmp_path / 'nope.toml'}: file not found"


def test_no_config_anywhere(tmp_path: Path) -> None:
    result = clusterctl("status", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    assert "no hosts.toml found" in one_error_line(result)


def test_profile_errors_exit_2(config: dict[str, str], tmp_path: Path) -> None:
    result = clusterctl("up", "missing", env=config)
    assert result.returncode == 2
    assert "no profile named 'missing' (profiles there: p)" in one_error_line(result)
    bad_split = clusterctl("up", "p", "--split", "1,1", env=config)
    assert bad_split.returncode == 2
    assert "--split" in one_error_line(bad_split)
    wrong_count = clusterctl("up", "p", "--split", "1/1/1", "--skip-health", env=config)
    assert wrong_count.returncode == 2
    assert (
        "tensor_split: split 1/1/1 has 3 entries but the cluster has 2 devices"
        in one_error_line(wrong_count)
    )


def test_flag_beats_environment(tmp_path: Path, config: dict[str, str]) -> None:
    other = tmp_path / "other.toml"
    other.write_text("not toml [")
    env = {**config, "CLUSTERCTL_CONFIG": str(other)}
    assert clusterctl("config", "check", env=env).returncode == 2
    ok = clusterctl("--config", config["CLUSTERCTL_CONFIG"], "config", "check", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    document = json.loads(ok.stdout)
    assert document["sources"]["config_file"] == config["CLUSTERCTL_CONFIG"]
    assert [d["host"] for d in document["profiles"]["p"]["devices"]] == ["a", "b"]


def test_command_options_come_from_the_environment(config: dict[str, str]) -> None:
    result = clusterctl("up", "p", env={**config, "CLUSTERCTL_UP_SPLIT": "2,1"})
    assert result.returncode == 2 and "--split" in result.stderr


def test_health_fails_with_exit_1_and_one_json_document(config: dict[str, str]) -> None:
    result = clusterctl("health", "p", "--json", "--quick", env=config)
    assert result.returncode == 1
    document = json.loads(result.stdout)  # exactly one JSON document on stdout
    failed = {(c["host"], c["name"]) for c in document["checks"] if c["level"] == "fail"}
    assert ("a", "binaries") in failed and ("a", "model") in failed


def test_down_and_status_on_an_idle_cluster(config: dict[str, str]) -> None:
    down = clusterctl("down", env=config)
    assert down.returncode == 0 and "nothing was running" in down.stderr
    status = clusterctl("status", "--json", env=config)
    assert status.returncode == 0
    assert json.loads(status.stdout) == {
        "components": [],
        "unreachable": {},
        "load": None,
        "daemon": None,
    }


def test_logs_rejects_unknown_host_and_component(config: dict[str, str]) -> None:
    host = clusterctl("logs", "zz", "rpc-server", env=config)
    assert host.returncode == 2 and "no host named 'zz'" in one_error_line(host)
    component = clusterctl("logs", "a", "sshd", env=config)
    assert component.returncode == 2 and "no component named 'sshd'" in one_error_line(component)


def test_the_health_gate_of_up_counts_the_ok_checks_it_does_not_show(
    config: dict[str, str],
) -> None:
    result = clusterctl("up", "p", env=config)
    assert result.returncode == 5
    summary = [line for line in result.stderr.splitlines() if " ok, " in line]
    assert len(summary) == 1, result.stderr
    ok = int(summary[0].split()[0])
    assert ok > 0 and summary[0].endswith(f"({ok} ok not shown)")
    # The ok rows themselves are not in the table: the hosts' ssh checks are ok here.
    assert "local connection and a command" not in result.stderr


def test_health_throughput_options_that_cannot_be_honoured_are_one_line(
    config: dict[str, str],
) -> None:
    both = clusterctl("health", "--throughput", "--quick", env=config)
    assert both.returncode == 2
    assert (
        one_error_line(both) == "error: --quick: --throughput measures, --quick does not: give one"
    )
    for bad in ("-1", "nan"):
        result = clusterctl("health", "--throughput-max-age", bad, env=config)
        assert result.returncode == 2
        assert one_error_line(result).startswith(
            "error: --throughput-max-age: the maximum age must be >= 0 hours"
        )
    from_env = clusterctl("health", env={**config, "CLUSTERCTL_HEALTH_THROUGHPUT_MAX_AGE": "-2"})
    assert from_env.returncode == 2 and "--throughput-max-age" in one_error_line(from_env)
