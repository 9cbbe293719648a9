"""Finding and reading configuration files.

Where things come from, highest precedence first (docs/configuration.md):

1. command-line flags (``--config``, ``--playbooks``, ``--state-dir``);
2. environment variables with the one prefix ``CLUSTERCTL_`` (``CLUSTERCTL_CONFIG``,
   ``CLUSTERCTL_PLAYBOOKS``, ``CLUSTERCTL_STATE_DIR``; every CLI flag has one);
3. the ``[controller]`` table of hosts.toml (``state_dir``, ``playbooks_dir``);
4. defaults: ``./hosts.toml`` then ``~/.config/clusterctl/hosts.toml``; ``./playbooks``;
   ``~/.local/state/clusterctl``.

Errors name the file, the key and what was expected, on one line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from cluster.config.models import Inventory, Profile
from cluster.errors import ConfigError

ENV_PREFIX = "CLUSTERCTL_"
ModelT = TypeVar("ModelT", bound=BaseModel)


def config_search_path(cwd: Path, home: Path) -> list[Path]:
    """Where hosts.toml is looked for when neither flag nor environment names one."""
    return [cwd / "hosts.toml", home / ".config" / "clusterctl" / "hosts.toml"]


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """The first problem of a pydantic error as (dotted key, what was expected)."""
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and not isinstance(first["input"], dict | list):
        message = f"{message} (got {first['input']!r})"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return key, message


def read_toml(path: Path) -> dict[str, object]:
    """Parse one TOML file; a missing, unreadable or malformed file (including one that is
    not UTF-8, as TOML must be) is a ConfigError naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})",
            file=str(path),
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None


def validate(model: type[ModelT], data: Mapping[str, object], source: str) -> ModelT:
    """Build a record from parsed data, turning the first problem into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        key, message = describe_validation_error(exc)
        raise ConfigError(message, file=source, key=key) from None


@dataclass(frozen=True)
class Sources:
    """Where this run's configuration came from, after precedence was applied."""

    config_file: Path
    playbooks_dir: Path
    state_dir: Path


def expand_home(path: Path, source: str) -> Path:
    """``~`` or ``~user`` at the start of a path given by ``source`` (a flag or variable)."""
    try:
        return path.expanduser()
    except RuntimeError as exc:
        raise ConfigError(f"cannot expand ~ in {str(path)!r}: {exc}", key=source) from None


def find_config_file(flag: Path | None, environ: Mapping[str, str], cwd: Path, home: Path) -> Path:
    """Apply flag > CLUSTERCTL_CONFIG > ./hosts.toml > ~/.config/clusterctl/hosts.toml.

    ``~`` in a flag or variable is the home directory (a shell expands it only at the start
    of a word, a systemd unit or ``--config=~/x`` not at all)."""
    if flag is not None:
        return expand_home(flag, "--config")
    if environ.get(f"{ENV_PREFIX}CONFIG"):
        return expand_home(Path(environ[f"{ENV_PREFIX}CONFIG"]), f"{ENV_PREFIX}CONFIG")
    candidates = config_search_path(cwd, home)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(candidate) for candidate in candidates)
    raise ConfigError(
        f"no hosts.toml found (searched {searched}); pass --config or set {ENV_PREFIX}CONFIG"
    )


def load_inventory(path: Path) -> Inventory:
    inventory = validate(Inventory, read_toml(path), str(path))
    check_inventory(inventory, str(path))
    return inventory


def check_inventory(inventory: Inventory, source: str) -> None:
    """Checks across hosts: the head and the build host exist, no two hosts share a link
    endpoint."""
    known = ", ".join(sorted(inventory.hosts)) or "none"
    if inventory.cluster.head not in inventory.hosts:
        raise ConfigError(
            f"{inventory.cluster.head!r} is not a host (hosts: {known})",
            file=source,
            key="cluster.head",
        )
    builder = inventory.build.build_host
    if builder is not None and builder not in inventory.hosts:
        raise ConfigError(
            f"{builder!r} is not a host (hosts: {known})", file=source, key="build.build_host"
        )
    seen: dict[str, str] = {}
    for host in inventory.hosts.values():
        if host.rpc_endpoint in seen:
            raise ConfigError(
                f"{host.rpc_endpoint} is also {seen[host.rpc_endpoint]}'s link endpoint",
                file=source,
                key=f"hosts.{host.name}.link_address",
            )
        seen[host.rpc_endpoint] = host.name


def resolve_sources(
    inventory: Inventory,
    config_file: Path,
    *,
    playbooks_flag: Path | None = None,
    state_dir_flag: Path | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Sources:
    """Pick the playbooks and state directories by the documented precedence.

    ``~`` in a flag or variable is the home directory; hosts.toml's own paths were
    expanded when it was read (``LocalPath``), and relative ones are under its folder."""
    env = os.environ if environ is None else environ
    home = home or Path.home()
    base = config_file.parent

    def pick(flag: Path | None, flag_name: str, from_file: Path | None, default: Path) -> Path:
        env_key = f"{ENV_PREFIX}{flag_name.removeprefix('--').replace('-', '_').upper()}"
        if flag is not None:
            return expand_home(flag, flag_name)
        if env.get(env_key):
            return expand_home(Path(env[env_key]), env_key)
        if from_file is not None:
            return from_file if from_file.is_absolute() else base / from_file
        return default

    playbooks = pick(
        playbooks_flag, "--playbooks", inventory.controller.playbooks_dir, base / "playbooks"
    )
    state = pick(
        state_dir_flag,
        "--state-dir",
        inventory.controller.state_dir,
        home / ".local" / "state" / "clusterctl",
    )
    return Sources(config_file=config_file, playbooks_dir=playbooks, state_dir=state)


def profile_path(playbooks_dir: Path, name: str) -> Path:
    """A profile is found by name: NAME.toml in the playbooks directory, or a path."""
    as_path = Path(name)
    if as_path.suffix == ".toml":
        return as_path
    return playbooks_dir / f"{name}.toml"


def find_named(folder: Path, name: str, what: str, plural: str) -> Path:
    """NAME.toml in folder (or a path ending in .toml); a ConfigError listing the others
    there when it is missing: ``no screen playbook named 'x' (screens there: a, b)``."""
    path = profile_path(folder, name)
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"a link to {path.readlink()}, which does not exist", file=str(path))
    if not path.is_file():
        where = path.parent
        available = sorted(p.stem for p in where.glob("*.toml")) if where.is_dir() else []
        hint = f" ({plural} there: {', '.join(available)})" if available else ""
        raise ConfigError(f"no {what} named {name!r}{hint}", file=str(path))
    return path


def load_profile(playbooks_dir: Path, name: str) -> Profile:
    path = find_named(playbooks_dir, name, "profile", "profiles")
    data = read_toml(path)
    data.setdefault("name", path.stem)
    return validate(Profile, data, str(path))
