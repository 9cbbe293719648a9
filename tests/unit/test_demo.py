"""The demo's own configuration and the lines its daemon act prints."""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

from cluster.config.daemon import DaemonConfig
from cluster.config.loader import load_inventory, load_profile, resolve_sources
from cluster.demo import DEMO_PROFILE, free_port, toml_text, write_config
from cluster.demo_daemon import dashboard_lines, error_line, listen_url


def test_toml_text_reads_back_as_the_same_tables() -> None:
    data = {
        "name": 'a "quoted" name',
        "count": 3,
        "ratio": 1.5,
        "on": True,
        "list": ["x", "y"],
        "hosts": {"evo": {"port": 1, "sub": {"deep": [1, 2]}}, "odd.key": {"x": "y"}},
        "empty": {},
    }
    assert tomllib.loads(toml_text(data)) == data


def test_toml_text_leaves_out_none() -> None:
    assert tomllib.loads(toml_text({"a": None, "b": 1})) == {"b": 1}


def test_the_written_config_names_this_build_the_model_and_a_loopback_listener(
    tmp_path: Path,
) -> None:
    bin_dir, model = tmp_path / "bin", tmp_path / "tiny.gguf"
    hosts_file, playbooks = write_config(tmp_path, bin_dir, model, "127.0.0.1:18765")
    inventory = load_inventory(hosts_file)
    assert {host.llama_bin_dir for host in inventory.hosts.values()} == {str(bin_dir)}
    assert inventory.daemon.listen == "127.0.0.1:18765" and inventory.daemon.loopback
    assert inventory.daemon.token_env is None  # loopback: the dashboard needs no token
    # `clusterctl --config hosts.toml ...` finds the demo's record and playbooks
    sources = resolve_sources(inventory, hosts_file, environ={})
    assert (sources.state_dir, sources.playbooks_dir) == (tmp_path / "state", playbooks)
    assert load_profile(playbooks, DEMO_PROFILE).model == str(model)
    assert (playbooks / "screens" / "demo-shapes.toml").is_file()


def test_free_port_is_the_preferred_one_unless_something_listens_there() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert free_port("127.0.0.1", port) != port
    assert free_port("127.0.0.1", port) == port


def test_the_dashboard_line_without_a_token_is_the_url() -> None:
    config = DaemonConfig(listen="127.0.0.1:8765")
    assert listen_url(config) == "http://127.0.0.1:8765"
    assert dashboard_lines(config) == [
        "dashboard: http://127.0.0.1:8765/ (no token: the listener is on loopback)"
    ]


def test_the_dashboard_line_with_a_token_names_its_variable_never_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEMO_TOKEN", "s3cret-value")
    config = DaemonConfig(listen="[::1]:8765", token_env="DEMO_TOKEN")
    [line] = dashboard_lines(config)
    assert "http://[::1]:8765/login?token=$DEMO_TOKEN" in line
    assert "s3cret-value" not in line


def test_error_line_is_the_commands_error_line() -> None:
    stderr = "asking x to stop\nerror: the cluster is busy: y holds it\n"
    assert error_line(stderr) == "the cluster is busy: y holds it"
    assert error_line("a warning\nthe last words\n") == "the last words"
    assert error_line("") == "no output on stderr"
