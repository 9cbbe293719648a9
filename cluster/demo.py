"""The embedded default: a local two-host cluster on this machine, start to finish.

``clusterctl demo`` builds (or finds cached) the current llama.cpp, generates a tiny
model, and runs the main job on ``cluster/defaults/hosts.demo.toml``: health, up, a
bench, the demo screen (every prompt shape), status, down. No real hardware and no root needed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from cluster.builds.local import GENERATIONS, cache_root, ensure_build
from cluster.config.loader import load_inventory, load_profile
from cluster.config.models import Inventory, Profile
from cluster.testbed.models import TINY, cached_model

DEMO_PROFILE = "demo-tiny"
DEMO_SCREEN = "demo-shapes"


def defaults_dir() -> Path:
    return Path(str(resources.files("cluster") / "defaults"))


def demo_config() -> tuple[Path, Path]:
    """The embedded hosts.toml and playbooks directory."""
    root = defaults_dir()
    return root / "hosts.demo.toml", root / "playbooks"


def prepare(say: Callable[[str], None]) -> tuple[Inventory, Profile]:
    """Build llama.cpp and put the tiny model where the demo profile expects it."""
    hosts_file, playbooks = demo_config()
    inventory = load_inventory(hosts_file)
    profile = load_profile(playbooks, DEMO_PROFILE)
    built = ensure_build(GENERATIONS["current"], say=say)
    # The embedded file names the default cache; follow CLUSTERCTL_CACHE when it is set.
    hosts = {
        name: host.model_copy(update={"llama_bin_dir": str(built)})
        for name, host in inventory.hosts.items()
    }
    inventory = inventory.model_copy(update={"hosts": hosts})
    # The embedded profile names a model under the default cache; follow CLUSTERCTL_CACHE.
    model = cache_root() / "demo" / Path(profile.model).name
    profile = profile.model_copy(update={"model": str(model)})
    if not model.is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached_model(TINY)[0], model)
        say(f"tiny model written to {model}")
    return inventory, profile
