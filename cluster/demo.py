"""The embedded default: a local two-host cluster on this machine, start to finish.

``clusterctl demo`` builds (or finds cached) the current llama.cpp, generates a tiny
model, and runs the main job on ``cluster/defaults/hosts.demo.toml``: health, up, a
bench, the demo screen (every prompt shape), status; then the daemon takes over what
serves (``demo_daemon``). No real hardware and no root needed.

The demo runs from a directory of its own, ``~/.local/state/clusterctl/demo``, written on
every run from the embedded files: ``hosts.toml`` (the embedded inventory with this
machine's build, the demo's state directory and a ``[daemon]`` table listening on
loopback), ``playbooks/`` (the demo profile, naming the generated model, and its screen)
and ``state/`` (the record, the daemon's socket and log). The hosts' run directories are
beside them. Every command the demo shows works on it: ``clusterctl --config
~/.local/state/clusterctl/demo/hosts.toml status``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cluster.builds.local import GENERATIONS, cache_root, ensure_build
from cluster.config.loader import load_inventory, load_profile, read_toml
from cluster.config.models import Inventory, Profile
from cluster.testbed.models import TINY, cached_model

DEMO_PROFILE = "demo-tiny"
DEMO_SCREEN = "demo-shapes"
# The daemon's TCP listener (API, dashboard, front door): this port when it is free.
DEMO_LISTEN_HOST = "127.0.0.1"
DEMO_LISTEN_PORT = 8765
# The supervisor probes every second, so a killed llama-server is seen at once.
DEMO_DAEMON = {"probe_interval_s": 1}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class DemoSetup:
    """The demo's own configuration, written and read back."""

    root: Path
    hosts_file: Path
    playbooks_dir: Path
    state_dir: Path
    inventory: Inventory
    profile: Profile


def defaults_dir() -> Path:
    return Path(str(resources.files("cluster") / "defaults"))


def demo_config() -> tuple[Path, Path]:
    """The embedded hosts.toml and playbooks directory."""
    root = defaults_dir()
    return root / "hosts.demo.toml", root / "playbooks"


def demo_root() -> Path:
    return Path.home() / ".local" / "state" / "clusterctl" / "demo"


def toml_text(table: Mapping[str, object], prefix: str = "") -> str:
    """A table of strings, numbers, booleans, lists and nested tables as TOML (JSON's
    spelling of those values is TOML's); None values are left out."""

    def key(name: str) -> str:
        return name if _BARE_KEY.match(name) else json.dumps(name)

    lines = [
        f"{key(name)} = {json.dumps(value)}"
        for name, value in table.items()
        if value is not None and not isinstance(value, Mapping)
    ]
    for name, value in table.items():
        if isinstance(value, Mapping):
            header = f"{prefix}{key(name)}"
            nested = all(isinstance(inner, Mapping) for inner in value.values())
            body = toml_text(value, f"{header}.").strip("\n")
            lines += ["", body] if value and nested else ["", f"[{header}]", body]
    return "\n".join(lines).strip("\n") + "\n"


def _tables(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return value


def free_port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens on it, else a port the kernel picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            bound: int = probe.getsockname()[1]
            return bound
    raise OSError(f"no free port on {host}")


def write_config(root: Path, bin_dir: Path, model: Path, listen: str) -> tuple[Path, Path]:
    """The demo's hosts.toml and playbooks under ``root``, from the embedded ones."""
    hosts_file, playbooks = demo_config()
    hosts = read_toml(hosts_file)
    machines = _tables(hosts["hosts"])
    for name, spec in machines.items():
        machines[name] = {**_tables(spec), "llama_bin_dir": str(bin_dir)}
    hosts["controller"] = {"state_dir": "state", "playbooks_dir": "playbooks"}
    hosts["daemon"] = {"listen": listen, **DEMO_DAEMON}
    profile = read_toml(playbooks / f"{DEMO_PROFILE}.toml")
    profile["model"] = str(model)
    written = root / "playbooks"
    shutil.rmtree(written, ignore_errors=True)
    shutil.copytree(playbooks, written)
    head = f"# Written by `clusterctl demo` from {hosts_file.name}, on every run.\n"
    (written / f"{DEMO_PROFILE}.toml").write_text(head + toml_text(profile))
    (root / "hosts.toml").write_text(head + toml_text(hosts))
    return root / "hosts.toml", written


def prepare(say: Callable[[str], None], root: Path | None = None) -> DemoSetup:
    """Build llama.cpp, put the tiny model in the cache, write the demo's configuration."""
    root = root or demo_root()
    built = ensure_build(GENERATIONS["current"], say=say)
    embedded = load_profile(demo_config()[1], DEMO_PROFILE)
    model = cache_root() / "demo" / Path(embedded.model).name
    if not model.is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached_model(TINY)[0], model)
        say(f"tiny model written to {model}")
    root.mkdir(parents=True, exist_ok=True)
    listen = f"{DEMO_LISTEN_HOST}:{free_port(DEMO_LISTEN_HOST, DEMO_LISTEN_PORT)}"
    hosts_file, playbooks = write_config(root, built, model, listen)
    return DemoSetup(
        root=root,
        hosts_file=hosts_file,
        playbooks_dir=playbooks,
        state_dir=root / "state",
        inventory=load_inventory(hosts_file),
        profile=load_profile(playbooks, DEMO_PROFILE),
    )
