"""The testbed's sshd_config: what every host gets, and the clean-shell option."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cluster.testbed.network import TestbedError
from cluster.testbed.sshd import sshd_config_text


def config(clean_shell: bool = False, key: str = "/tb/hosts/evo/sshd/host_key") -> list[str]:
    return sshd_config_text(
        address=ipaddress.IPv4Address("10.231.0.11"),
        port=22,
        host_key=Path(key),
        pid_file=Path("/tb/hosts/evo/sshd/sshd.pid"),
        authorized_keys=Path("/tb/client/authorized_keys"),
        clean_shell=clean_shell,
    ).splitlines()


def test_every_host_listens_on_its_address_with_keys_only() -> None:
    lines = config()
    assert "ListenAddress 10.231.0.11:22" in lines
    assert "PasswordAuthentication no" in lines and "UsePAM no" in lines
    assert not any(line.startswith("SetEnv") for line in lines)


def test_clean_shell_starts_sessions_at_shell_level_1() -> None:
    assert config(clean_shell=True)[-1] == "SetEnv SHLVL=1"


def test_paths_sshd_would_split_are_refused() -> None:
    with pytest.raises(TestbedError, match="absolute path"):
        config(key="/tb/with space/key")
