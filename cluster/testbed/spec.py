"""What a testbed is: the spec to build one, and the record of one built (``testbed.json``)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.testbed import network
from cluster.testbed.network import TAG_PATTERN, LinkShaping, NetworkLayout
from cluster.testbed.sshd import SshdInstance

DEFAULT_NAMES = ("evo", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ant", "yak")
RATE_PATTERN = r"^[0-9]+(\.[0-9]+)?([kmgt]?(bit|bps))$"
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@=,-]*$")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestbedSpec(_Record):
    """What to build: how many hosts, their names (the first is the head), and the link."""

    __test__ = False  # not a pytest test class, despite the name

    n_hosts: int = Field(default=2, ge=1, le=len(DEFAULT_NAMES))
    names: tuple[str, ...] = DEFAULT_NAMES
    root: Path
    tag: str = Field(default_factory=network.free_tag, pattern=TAG_PATTERN)
    link_rate: str | None = Field(default="1gbit", pattern=RATE_PATTERN)
    link_delay_ms: float | None = Field(default=0.2, ge=0)
    # Hosts run commands without the login user's ~/.bashrc. Every host's shells run on
    # this machine's cores; a heavy .bashrc (pyenv, conda) then costs each command of each
    # host ~0.1 core-second here, CPU that real hosts would each spend on their own.
    clean_shell: bool = False

    @field_validator("root")
    @classmethod
    def _absolute(cls, root: Path) -> Path:
        # sshd_config and hosts.toml need absolute paths; namespaces share the cwd anyway.
        return root.absolute()

    @model_validator(mode="after")
    def _check(self) -> TestbedSpec:
        if self.n_hosts > len(self.names):
            raise ValueError(f"n_hosts = {self.n_hosts} but only {len(self.names)} names")
        if len(set(self.host_names)) != self.n_hosts:
            raise ValueError("host names must be unique")
        for name in self.host_names:
            if not re.match(r"^[a-z][a-z0-9]{0,11}$", name) or name == "link":
                raise ValueError(f"host name {name!r}: 1-12 lowercase letters/digits, not 'link'")
        if not _SAFE_PATH.match(str(self.root)):
            raise ValueError(f"root {self.root}: only letters, digits and _./+@=,- please")
        return self

    @property
    def host_names(self) -> tuple[str, ...]:
        return self.names[: self.n_hosts]


class TestbedHost(_Record):
    """One host as tests and the inventory see it."""

    __test__ = False

    name: str
    namespace: str
    mgmt_address: ipaddress.IPv4Address
    link_address: ipaddress.IPv4Address
    run_dir: Path
    rpc_cache_dir: Path
    sshd: SshdInstance


class TestbedRecord(_Record):
    """The persisted description of one testbed (``<root>/testbed.json``)."""

    __test__ = False

    version: Literal[1] = 1
    status: Literal["creating", "up", "destroyed"]
    spec: TestbedSpec
    network: NetworkLayout
    hosts: tuple[TestbedHost, ...]
    client_key: Path
    known_hosts: Path
    authorized_keys: Path
    state_dir: Path
    shaping: LinkShaping | None = None
