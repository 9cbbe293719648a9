"""The command line's side of the daemon's API: ``serve``, ``submit``, ``jobs``,
``cancel`` and ``status`` talk to it over its Unix socket (httpx)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx

from cluster.daemon.models import DaemonStatus, Desired, Job, JobRequest
from cluster.errors import ConfigError, TransportError


class DaemonClient:
    def __init__(self, socket_path: Path, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://daemon",
            timeout=timeout_s,
        )

    def _listening(self) -> str | None:
        """Why nothing listens on the socket, or None. Checked with a socket of our own,
        closed either way (httpx's transport leaks the one of a refused connection)."""
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket_path))
            except OSError as exc:
                return exc.strerror or type(exc).__name__
        return None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        why = self._listening()
        try:
            if why is not None:
                raise httpx.ConnectError(why)
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransportError(
                "daemon",
                f"no daemon answers on {self.socket_path} ({exc}); start one with "
                "`clusterctl daemon`",
            ) from None
        if response.status_code in (400, 404, 422):
            detail = response.json().get("detail", response.text)
            raise ConfigError(str(detail))
        if response.status_code >= 300:
            raise TransportError("daemon", f"{method} {path}: HTTP {response.status_code}")
        return response.json()

    def answers(self) -> bool:
        if self._listening() is not None:
            return False
        try:
            self._http.get("/api/status", timeout=3)
        except httpx.TransportError:
            return False
        return True

    def status(self) -> DaemonStatus:
        return DaemonStatus.model_validate(self._call("GET", "/api/status"))

    def set_desired(self, profile: str | None, split: str | None = None) -> Desired:
        body = {"profile": profile, "split": split}
        return Desired.model_validate(self._call("PUT", "/api/desired", json=body))

    def submit(self, request: JobRequest) -> Job:
        return Job.model_validate(
            self._call("POST", "/api/jobs", json=request.model_dump(mode="json"))
        )

    def jobs(self) -> list[Job]:
        return [Job.model_validate(job) for job in self._call("GET", "/api/jobs")]

    def cancel(self, job_id: int) -> Job:
        return Job.model_validate(self._call("POST", f"/api/jobs/{job_id}/cancel"))

    def close(self) -> None:
        self._http.close()
