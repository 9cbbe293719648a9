"""The ``[daemon]`` table of hosts.toml: how ``clusterctl daemon`` listens and supervises.

Defaults suit a two-host cluster on a desk: the API on a Unix socket in the state
directory (its file permissions are the authentication), a probe every 5 s, restarts after
2 s doubling up to 5 minutes, the backoff forgotten after 10 minutes of stable serving.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.config.addresses import is_loopback_host

_LISTEN = re.compile(r"^(?P<host>[0-9A-Za-z.:\[\]-]+):(?P<port>[0-9]{1,5})$")


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # The API's Unix socket; default STATE_DIR/daemon.sock.
    socket: str | None = None
    # Also listen on TCP (HOST:PORT): the API, the dashboard and the front door (/v1). The
    # API and the dashboard need the bearer token read from the environment variable
    # ``token_env`` (required unless HOST is loopback); /v1 needs a front-door key.
    listen: str | None = None
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The front door's API keys: one per line in ``key_file``, and/or comma-separated in
    # the variable ``keys_env``. Without any, /v1 is open: allowed on loopback only.
    keys_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    key_file: str | None = None
    # Requests that arrive while the group restarts or a job has it wait, at most this many
    # and this long; past that they get 503 with Retry-After.
    queue_size: int = Field(default=32, ge=0)
    queue_wait_s: float = Field(default=300.0, gt=0)
    request_timeout_s: float = Field(default=3600.0, gt=0)
    probe_interval_s: float = Field(default=5.0, gt=0)
    # A one-token completion when idle, at most this often (catches a worker that stopped
    # while nothing was asked of it).
    idle_probe_s: float = Field(default=30.0, gt=0)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)
    stable_s: float = Field(default=600.0, gt=0)
    # How long a job waits for requests in flight to finish before it takes the cluster.
    drain_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None and not _LISTEN.match(value):
            raise ValueError(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:8765")
        return value

    @model_validator(mode="after")
    def _token_with_listen(self) -> DaemonConfig:
        if self.listen is None or self.loopback:
            return self
        if self.token_env is None:
            raise ValueError(
                f"listen {self.listen} is beyond loopback: set token_env (the API's token)"
            )
        if self.keys_env is None and self.key_file is None:
            raise ValueError(
                f"listen {self.listen} is beyond loopback: set keys_env or key_file (the "
                "front door's keys)"
            )
        return self

    @property
    def loopback(self) -> bool:
        address = self.address()
        return address is not None and is_loopback_host(address[0])

    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        match = _LISTEN.match(self.listen)
        assert match is not None
        return match["host"].strip("[]"), int(match["port"])
