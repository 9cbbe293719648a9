"""``clusterctl daemon install``: a systemd user unit that runs the daemon.

The unit runs this clusterctl (this Python, this hosts.toml) in the foreground; systemd
restarts it when it dies, sends SIGTERM to stop it (the daemon pauses its job and leaves
the cluster serving for the next daemon), and keeps its output in the journal.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def unit_text(config_file: Path, state_dir: Path, environment_file: Path | None) -> str:
    command = shlex.join(
        [sys.executable, "-m", "cluster", "--config", str(config_file), "--state-dir",
         str(state_dir), "daemon"]
    )  # fmt: skip
    env = f"EnvironmentFile=-{environment_file}\n" if environment_file else ""
    return f"""[Unit]
Description=clusterctl daemon: keeps an llama.cpp RPC cluster serving, runs its jobs
Documentation=file://{Path(__file__).resolve().parents[2] / "docs" / "daemon.md"}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={command}
{env}Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=60
UMask=0077

[Install]
WantedBy=default.target
"""


def unit_path() -> Path:
    return Path.home() / ".config" / "systemd" / "user" / "clusterctl.service"
