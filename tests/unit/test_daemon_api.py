"""The daemon's API in-process (httpx against the ASGI app): what it accepts, what it
refuses with a clear message, the token on TCP, and the metrics text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.config.daemon import DaemonConfig
from cluster.config.models import Inventory
from cluster.daemon.api import build_app
from cluster.daemon.auth import TokenGuard
from cluster.daemon.context import DaemonContext
from cluster.daemon.jobs import JobRunner
from cluster.daemon.supervisor import Supervisor
from cluster.store import Store
from cluster.transport.pool import HostPool


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[DaemonContext]:
    inventory = Inventory.model_validate(
        {
            "cluster": {"head": "evo"},
            "hosts": {
                "evo": {
                    "transport": "local",
                    "link_address": "127.0.0.2",
                    "link_interface": "lo",
                    "llama_bin_dir": "/x",
                    "run_dir": str(tmp_path / "run"),
                }
            },
        }
    )
    playbooks = tmp_path / "playbooks"
    (playbooks / "sweeps").mkdir(parents=True)
    (playbooks / "tiny.toml").write_text('model = "/m.gguf"\nrpc_hosts = []\ntensor_split = "1"\n')
    with Store(tmp_path / "state") as store:
        yield DaemonContext(
            inventory, playbooks, tmp_path / "state", store, HostPool([]), environ={}
        )


def call(ctx: DaemonContext, method: str, path: str, token: str | None = None, **kw: object) -> httpx.Response:
    supervisor = Supervisor(ctx)
    app = build_app(ctx, supervisor, JobRunner(ctx, supervisor))
    served = TokenGuard(app, token) if token else app

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return await client.request(method, path, **kw)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_desired_state_is_checked_then_kept(ctx: DaemonContext) -> None:
    unknown = call(ctx, "PUT", "/api/desired", json={"profile": "nope"})
    assert unknown.status_code == 400 and "no profile named 'nope'" in unknown.json()["detail"]
    bad_split = call(ctx, "PUT", "/api/desired", json={"profile": "tiny", "split": "1/1"})
    assert bad_split.status_code == 400 and "has 2 entries" in bad_split.json()["detail"]
    ok = call(ctx, "PUT", "/api/desired", json={"profile": "tiny"})
    assert ok.status_code == 200 and ok.json()["profile"] == "tiny"
    assert call(ctx, "GET", "/api/desired").json()["profile"] == "tiny"
    status = call(ctx, "GET", "/api/status").json()
    assert status["state"] == "idle" and status["desired"]["profile"] == "tiny"


def test_jobs_are_validated_queued_listed_and_cancelled(ctx: DaemonContext) -> None:
    bad = call(ctx, "POST", "/api/jobs", json={"kind": "bench", "target": "tiny", "window": "1-7"})
    assert bad.status_code == 400 and "is not a window" in bad.json()["detail"]
    option = call(
        ctx, "POST", "/api/jobs", json={"kind": "bench", "target": "tiny", "options": {"gen": 0}}
    )
    assert option.status_code == 400 and "gen" in option.json()["detail"]
    missing = call(ctx, "POST", "/api/jobs", json={"kind": "sweep", "target": "night"})
    assert missing.status_code == 400 and "no sweep playbook named 'night'" in missing.text
    made = call(ctx, "POST", "/api/jobs", json={"kind": "bench", "target": "tiny", "at": 4e9})
    assert made.status_code == 201 and made.json()["status"] == "waiting"
    job_id = made.json()["id"]
    assert [j["id"] for j in call(ctx, "GET", "/api/jobs").json()] == [job_id]
    cancelled = call(ctx, "POST", f"/api/jobs/{job_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert call(ctx, "POST", "/api/jobs/999/cancel").status_code == 404


def test_tcp_needs_the_token(ctx: DaemonContext) -> None:
    refused = call(ctx, "GET", "/api/status", token="s3cret")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    wrong = call(ctx, "GET", "/api/status", token="s3cret", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    right = call(
        ctx, "GET", "/api/status", token="s3cret", headers={"Authorization": "Bearer s3cret"}
    )
    assert right.status_code == 200


def test_metrics_are_prometheus_text(ctx: DaemonContext) -> None:
    text = call(ctx, "GET", "/metrics").text
    for name in (
        "clusterctl_serving",
        "clusterctl_restarts_total",
        "clusterctl_load_seconds_bucket",
        "clusterctl_time_to_recover_seconds_bucket",
        "clusterctl_jobs_queued",
        "clusterctl_job_progress_ratio",
    ):
        assert name in text or name.removesuffix("_total") in text, name


def test_a_browser_logs_in_once_and_the_front_door_keeps_its_own_keys(ctx: DaemonContext) -> None:
    # No room to wait: a request while nothing serves is refused at once.
    ctx.inventory = ctx.inventory.model_copy(update={"daemon": DaemonConfig(queue_size=0)})
    supervisor = Supervisor(ctx)
    guarded = TokenGuard(build_app(ctx, supervisor, JobRunner(ctx, supervisor)), "s3cret")

    async def go() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            bad = await client.get("/login", params={"token": "nope"})
            login = await client.get("/login", params={"token": "s3cret"})
            with_cookie = await client.get("/api/status")  # the client keeps the cookie
            front = await client.post("/v1/completions", json={})
            return bad, login, with_cookie, front

    bad, login, with_cookie, front = asyncio.run(go())
    assert bad.status_code == 401
    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"]
    assert "clusterctl_token=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert with_cookie.status_code == 200
    # /v1 is not behind the daemon's token: the front door answers (here: not serving).
    assert front.status_code == 503 and front.headers["retry-after"]
    assert "the cluster is not serving" in front.json()["error"]["message"]


def test_without_a_token_loopback_is_open(ctx: DaemonContext) -> None:
    assert call(ctx, "GET", "/api/status", token=None).status_code == 200
