"""Configuration records: the inventory (hosts.toml) and serving profiles (playbooks/*.toml).

All of them are strict pydantic models: an unknown key is an error, and every value is
checked where it is read, so a mistake is reported with its file and key before anything
runs on a host. Cross-checks that need both files (a profile naming a host that is not in
the inventory, a split with the wrong number of entries) live in ``resolve.py``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from cluster.config.addresses import is_loopback_host
from cluster.config.build import BuildConfig
from cluster.config.daemon import DaemonConfig
from cluster.errors import ConfigError

# A name we are willing to put on a command line or in a file name unquoted.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _expand_home(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError as exc:  # ~user of a user that does not exist, or no home at all
        raise ValueError(f"cannot expand ~ in {str(path)!r}: {exc}") from None


# A path on this machine (the controller's): ``~`` and ``~user`` become the home directory.
LocalPath = Annotated[Path, AfterValidator(_expand_home)]


def _nul_free(value: object) -> None:
    """Refuse a NUL character anywhere in a value: no argv, path or environment can carry
    one, so it would only fail later, far from the file that has it."""
    if isinstance(value, str | Path) and "\0" in str(value):
        raise ValueError("contains a NUL character (\\u0000)")
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _nul_free(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _nul_free(key)
            _nul_free(item)


class StrictModel(BaseModel):
    """Base of every configuration record: unknown keys are errors, records are frozen,
    numbers are finite (no ``inf`` or ``nan``, which TOML can spell) and no string holds a
    NUL character."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        _nul_free(value)
        return value


class HostConfig(StrictModel):
    """One machine of the cluster, as the controller reaches it and as it serves."""

    name: Name
    transport: Literal["ssh", "local"] = "ssh"
    # How ssh reaches it: a host name, an address or an alias from ~/.ssh/config.
    ssh_target: str | None = None
    user: str | None = None
    ssh_port: Port | None = None
    ssh_key: LocalPath | None = None
    known_hosts: LocalPath | None = None
    # The explicit, per-host opt-out of host key verification. Never implied.
    insecure_skip_host_key_check: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0)

    link_address: ipaddress.IPv4Address
    link_interface: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,15}$")]
    rpc_port: Port = 50052
    llama_bin_dir: str
    # Put before every llama.cpp binary, e.g. ["toolbox", "run", "-c", "llama-rocm", "--"].
    command_prefix: list[str] = []
    env: dict[str, str] = {}
    rpc_devices: list[str] = []
    # GPUs that llama-server itself uses when this host is the head (after the RPC devices).
    local_devices: int = Field(default=0, ge=0)
    rpc_threads: int | None = Field(default=None, ge=1)
    memory_budget_gib: float | None = Field(default=None, gt=0)
    # Peak memory bandwidth of each of this host's devices in GB/s (decimal, as quoted:
    # Strix Halo 256, H200 4800). Unset: reports say the peak is unknown, never a guess.
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)
    # Where pid files and logs live on the host; relative paths are under the login home.
    run_dir: str = ".local/state/clusterctl"
    # The rpc-server tensor cache ($LLAMA_CACHE); default is llama.cpp's own.
    rpc_cache_dir: str | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.match(ENV_NAME_PATTERN, key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return env

    @field_validator("rpc_devices")
    @classmethod
    def _device_names(cls, devices: list[str]) -> list[str]:
        for device in devices:
            if not re.match(r"^[A-Za-z0-9_-]+$", device):
                raise ValueError(f"{device!r} is not a device name such as ROCm0 or Vulkan0")
        return devices

    @field_validator("link_address")
    @classmethod
    def _private_link(cls, address: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        # rpc-server is unauthenticated: it may only ever listen on a private link.
        if not (address.is_private or address.is_loopback) or address.is_unspecified:
            raise ValueError(f"{address} is not a private link address; rpc-server binds to it")
        return address

    @model_validator(mode="after")
    def _transport_fields(self) -> HostConfig:
        if self.transport == "local":
            ssh_only = ("ssh_target", "user", "ssh_port", "ssh_key", "known_hosts")
            given = [field for field in ssh_only if getattr(self, field) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to transport = 'ssh'")
        return self

    @property
    def rpc_device_count(self) -> int:
        """How many devices this host's rpc-server contributes to the split."""
        return max(1, len(self.rpc_devices))

    @property
    def rpc_endpoint(self) -> str:
        return f"{self.link_address}:{self.rpc_port}"


class ControllerConfig(StrictModel):
    """Settings of the controller itself (this machine)."""

    # ``~`` is this machine's home; a relative path is relative to hosts.toml.
    state_dir: LocalPath | None = None
    playbooks_dir: LocalPath | None = None


class ClusterSection(StrictModel):
    name: Name = "cluster"
    head: Name


class Inventory(StrictModel):
    """The whole hosts.toml: the cluster, the controller and every host by name."""

    cluster: ClusterSection
    controller: ControllerConfig = ControllerConfig()
    # The one llama.cpp build every host runs (``clusterctl provision``).
    build: BuildConfig = BuildConfig()
    # How ``clusterctl daemon`` listens and supervises.
    daemon: DaemonConfig = DaemonConfig()
    hosts: dict[Name, HostConfig]

    @model_validator(mode="before")
    @classmethod
    def _name_hosts(cls, data: object) -> object:
        # A host's name is its table key; the record carries it too, for convenience.
        if isinstance(data, dict) and isinstance(data.get("hosts"), dict):
            hosts = data["hosts"]
            data = dict(data)
            data["hosts"] = {
                name: {"name": name, **spec} if isinstance(spec, dict) else spec
                for name, spec in hosts.items()
            }
        return data

    @property
    def head(self) -> HostConfig:
        return self.hosts[self.cluster.head]


def parse_split(value: object) -> list[float]:
    """Read a tensor split written as "1.2/0.8" or as a list of numbers."""
    if isinstance(value, str):
        if "," in value:
            raise ValueError(f"{value!r} uses ',': a split is written with '/', as 1.2/0.8")
        parts: list[object] = [part.strip() for part in value.split("/")]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise ValueError("a split is a string such as '1.2/0.8' or a list of numbers")
    try:
        numbers = [float(part) for part in parts]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a list of numbers separated by '/'") from None
    if not all(math.isfinite(number) for number in numbers):
        raise ValueError(f"{value!r}: proportions must be finite numbers (not inf or nan)")
    if not numbers or any(number < 0 for number in numbers) or sum(numbers) <= 0:
        raise ValueError(f"{value!r}: proportions must be >= 0 with a positive sum")
    return numbers


def format_split(split: list[float]) -> str:
    """The llama.cpp spelling of a split: 1.2/0.8."""
    return "/".join(f"{part:g}" for part in split)


class Profile(StrictModel):
    """A named way to serve one model on the cluster (playbooks/NAME.toml)."""

    name: Name
    description: str = ""
    # Path on the head; for a multi-file GGUF, the first shard.
    model: str
    rpc_hosts: list[Name]
    tensor_split: list[float]
    n_gpu_layers: int = Field(default=99, ge=0)
    ctx_size: int = Field(default=4096, ge=0)
    parallel: int = Field(default=1, ge=1)
    flash_attn: Literal["on", "off", "auto"] = "auto"
    direct_io: bool = True
    no_warmup: bool = True
    rpc_cache: bool = True
    threads: int | None = Field(default=None, ge=1)
    extra_args: list[str] = []
    bind_host: str = "127.0.0.1"
    port: Port = 8080
    # The name of an environment variable holding the API key; the key is never in a file
    # of the configuration, and reaches llama-server as --api-key-file, never in its argv.
    api_key_env: Annotated[str, Field(pattern=ENV_NAME_PATTERN)] | None = None
    # A bind_host other than loopback without an API key exposes llama-server to anyone on
    # that network: refused unless this explicit opt-out is set (health then warns).
    allow_unauthenticated: bool = False
    load_timeout_s: float = Field(default=900.0, gt=0)
    stall_timeout_s: float = Field(default=120.0, gt=0)
    ready_timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=5.0, ge=0)

    @field_validator("tensor_split", mode="before")
    @classmethod
    def _split(cls, value: object) -> list[float]:
        return parse_split(value)

    @field_validator("rpc_hosts")
    @classmethod
    def _rpc_hosts(cls, hosts: list[str]) -> list[str]:
        if len(set(hosts)) != len(hosts):
            raise ValueError("a host is listed twice")
        return hosts

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, args: list[str]) -> list[str]:
        managed = {
            "--rpc",
            "-ts",
            "--tensor-split",
            "-m",
            "--model",
            "--host",
            "--port",
            "--api-key",
            "--api-key-file",
        }
        clash = managed.intersection(args)
        if clash:
            raise ValueError(f"{', '.join(sorted(clash))} are set by the profile's own keys")
        return args

    @model_validator(mode="after")
    def _exposure(self) -> Profile:
        if (
            not is_loopback_host(self.bind_host)
            and self.api_key_env is None
            and not self.allow_unauthenticated
        ):
            raise ValueError(
                f"bind_host {self.bind_host} exposes llama-server beyond this machine without "
                "an API key: set api_key_env (or allow_unauthenticated = true, which health "
                "reports)"
            )
        return self

    @property
    def exposed(self) -> bool:
        """Serving beyond loopback without an API key (the explicit opt-out)."""
        return not is_loopback_host(self.bind_host) and self.api_key_env is None

    def api_key(self, environ: Mapping[str, str]) -> SecretStr | None:
        """The API key from the named environment variable, if the profile uses one; a
        variable that is unset or empty is an error, never a server without a key."""
        if self.api_key_env is None:
            return None
        value = environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"names the environment variable {self.api_key_env}, which is unset or empty "
                "here; set it (the key), or remove api_key_env",
                file=f"profile {self.name}",
                key="api_key_env",
            )
        return SecretStr(value)
