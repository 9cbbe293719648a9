"""The dashboard's parts without a browser: the cluster view built from health checks,
runs as the page shows them (a screen's matrix, a ceiling's ladder, a sweep's verdict),
the report's files written on demand and reused, the background watch's cache and event
filter, and the routes in-process (the page, its assets, its JSON)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.config.models import Inventory
from cluster.daemon.api import build_app
from cluster.daemon.context import DaemonContext
from cluster.daemon.dashboard import snapshot
from cluster.daemon.dashboard.results import RUNNING_FRESH_S, fresh, run_view
from cluster.daemon.dashboard.routes import POLICY, static_dir, watch_of
from cluster.daemon.events import EventBus
from cluster.daemon.jobs import JobRunner
from cluster.daemon.supervisor import Supervisor
from cluster.errors import TransportError
from cluster.orchestration.verdicts import Check, Level, fail, ok
from cluster.store import Run, Store, Throughput
from cluster.transport.pool import HostPool

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inventory(tmp_path: Path) -> Inventory:
    host = {"transport": "local", "link_interface": "lo", "llama_bin_dir": "/x"}
    return Inventory.model_validate(
        {
            "cluster": {"name": "desk", "head": "evo"},
            "hosts": {
                "evo": {**host, "link_address": "127.0.0.2", "run_dir": str(tmp_path / "e")},
                "bee": {**host, "link_address": "127.0.0.3", "run_dir": str(tmp_path / "b")},
            },
        }
    )


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[DaemonContext]:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    with Store(tmp_path / "state") as store:
        yield DaemonContext(
            inventory(tmp_path), playbooks, tmp_path / "state", store, HostPool([]), environ={}
        )


def call(ctx: DaemonContext, path: str) -> httpx.Response:
    supervisor = Supervisor(ctx)
    app = build_app(ctx, supervisor, JobRunner(ctx, supervisor))

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return await client.get(path)

    return asyncio.run(go())


# --- the cluster view -------------------------------------------------------------------


def path_checks(worker_link: Level = Level.OK) -> list[Check]:
    worker = Check("bee", "link", worker_link, "down", "interface lo is down")
    return [
        ok("evo", "link", "up", "lo up with 127.0.0.2"),
        worker if worker_link is not Level.OK else ok("bee", "link", "up", "lo up with 127.0.0.3"),
        ok("evo", "route→bee", "lo", "127.0.0.3 routes over lo"),
        ok("evo", "rtt→bee", "0.04 ms", "link round trip (ping)"),
    ]


def test_a_link_is_up_only_when_both_ends_its_route_and_a_ping_are(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    measured = {"bee": Throughput(head="evo", worker="bee", bps=9.4e9, at=1000.0)}
    [link] = snapshot.links_view(inv, path_checks(), measured)
    assert (link.head, link.worker, link.address, link.up) == ("evo", "bee", "127.0.0.3", True)
    assert link.rtt == "0.04 ms" and link.throughput_bps == 9.4e9 and link.measured_at == 1000.0
    [down] = snapshot.links_view(inv, path_checks(Level.FAIL), {})
    assert down.up is False and down.detail == "bee: link: interface lo is down"
    assert down.throughput_bps is None
    lost = [*path_checks()[:3], fail("evo", "rtt→bee", "lost", "no ping reply from 127.0.0.3")]
    [unanswered] = snapshot.links_view(inv, lost, {})
    assert unanswered.up is False and unanswered.rtt is None
    [unknown] = snapshot.links_view(inv, [], {})  # before health has run
    assert unknown.up is None


def test_hosts_carry_their_link_verdict_and_whether_they_serve(tmp_path: Path) -> None:
    views = snapshot.hosts_view(inventory(tmp_path), {}, path_checks(Level.FAIL), {"bee"})
    evo, bee = views
    assert evo.head and not evo.serving and evo.link is Level.OK
    assert bee.serving and bee.link is Level.FAIL and bee.link_detail == "interface lo is down"
    assert evo.build is None  # no build read yet


def test_the_watch_starts_from_its_cache_when_it_is_of_these_hosts(ctx: DaemonContext) -> None:
    cache = ctx.state_dir / "dashboard" / "cluster.json"
    cache.parent.mkdir(parents=True)
    kept = snapshot.initial_view(ctx.inventory).model_copy(update={"health_at": 1234.0})
    cache.write_text(kept.model_dump_json())
    assert snapshot.ClusterWatch(ctx, Supervisor(ctx)).view.health_at == 1234.0
    other = kept.model_copy(update={"hosts": kept.hosts[:1]})  # an inventory since changed
    cache.write_text(other.model_dump_json())
    assert snapshot.ClusterWatch(ctx, Supervisor(ctx)).view.health_at is None
    cache.write_text("{not json")
    assert snapshot.ClusterWatch(ctx, Supervisor(ctx)).view.hosts[1].name == "bee"


def test_a_failing_part_is_shown_and_cleared_once_it_reads_again(ctx: DaemonContext) -> None:
    watch = snapshot.ClusterWatch(ctx, Supervisor(ctx))

    async def broken() -> None:
        raise TransportError("evo", "connection refused")

    async def fine() -> None:
        return None

    async def go() -> None:
        await watch._guarded("health", broken)
        assert watch.view.errors == {"health": "evo: connection refused"}
        await watch._guarded("health", fine)
        assert watch.view.errors == {}

    asyncio.run(go())


def test_the_watch_wakes_for_changes_to_what_runs_only() -> None:
    async def go() -> None:
        bus = EventBus()
        with bus.subscription() as queue:
            bus.publish("job", id=1)
            bus.publish("request", status=200)
            bus.publish("cluster", components_at=1.0)  # its own event
            started = time.monotonic()
            assert await snapshot._changed(queue, 0.2) == set()
            assert time.monotonic() - started >= 0.2
            bus.publish("progress", job=1, done=1)
            bus.publish("incident", cls="hang")
            bus.publish("state", state="recovering")
            bus.publish("desired", profile="tiny")
            kinds = await snapshot._changed(queue, 5.0)
            assert kinds == {"progress", "incident", "state", "desired"}
            assert queue.empty()

    asyncio.run(go())


# --- runs as the page shows them ---------------------------------------------------------


def record_screen(store: Store) -> int:
    run_id = store.start_run("screen", "tiny", {})
    cases = [
        ("chat", 512, "pass", None),
        ("chat", 2048, "pass", None),
        ("chat", 16384, "fail", "oom"),
        ("code", 512, "pass", None),
        ("code", 16384, "fail", "transport_drop"),
    ]
    for shape, target, status, failure in cases:
        store.record_result(
            run_id,
            f"{shape}-{target}",
            status,
            spec={"config": "tiny", "shape": shape, "target": target, "gen": 8},
            failure_class=failure,
            evidence="llama-server died" if failure else None,
        )
    store.finish_run(run_id, "ok", {})
    return run_id


def test_a_screen_reads_as_a_pass_fail_matrix_by_shape_and_target(ctx: DaemonContext) -> None:
    store = ctx.store
    run_id = record_screen(store)
    run = store.run(run_id)
    assert run is not None
    view = run_view(run, store.results(run_id), store.attempts(run_id))
    [matrix] = view.matrices
    assert matrix.config == "tiny" and matrix.shapes == ["chat", "code"]
    assert matrix.targets == ["512", "2048", "16384"]  # numeric order
    words = [[cell.words if cell else None for cell in row] for row in matrix.cells]
    assert words == [
        [["PASS"], ["PASS"], ["FAIL (oom)"]],
        [["PASS"], None, ["FAIL (transport_drop)"]],
    ]
    assert view.summary == "5 cases: 3 pass, 2 fail" and "## Failures" in view.markdown
    assert view.files == ["report.md", "report.png", "results.json", "results.csv"]


def test_a_ceiling_reads_as_its_ladder_with_each_failure_s_class(ctx: DaemonContext) -> None:
    store = ctx.store
    run_id = store.start_run("ceiling", "tiny", {})
    store.record_result(run_id, "t-1024", "pass", spec={"shape": "chat", "target": 1024})
    store.record_result(
        run_id, "t-4096", "fail", spec={"shape": "chat", "target": 4096}, failure_class="oom"
    )
    ladder = [{"target": 1024, "status": "pass"}, {"target": 4096, "status": "fail"}]
    store.finish_run(run_id, "ok", {"shape": "chat", "ceiling": 1024, "ladder": ladder})
    run = store.run(run_id)
    assert run is not None
    view = run_view(run, store.results(run_id), [])
    assert view.ceiling == 1024
    assert [(s.target, s.passed, s.failure_class) for s in view.ladder] == [
        (1024, True, None),
        (4096, False, "oom"),
    ]
    assert "Ceiling: 1024 tokens" in view.markdown and view.matrices == []


def record_sweep(store: Store) -> int:
    config = {
        "sweep": {"measure": {"shape": "random", "tokens": 64, "gen": 8, "repeat": 1}},
        "profile": {"rpc_hosts": ["evo", "bee"], "tensor_split": [1.0, 1.0]},
        "objective": {"metric": "tg_tps"},
    }
    run_id = store.start_run("sweep", "tiny", config)
    for split, tg in (("0.8/1.2", 90.0), ("1/1", 100.0), ("1.2/0.8", 200.0)):
        metrics: dict[str, Any] = {
            "summary": {"pp_tps": {"median": 1000.0}, "tg_tps": {"median": tg}},
            "objective": tg,
        }
        spec = {"split": split, "proportions": [float(p) for p in split.split("/")]}
        store.record_result(run_id, f"split={split}", "pass", spec=spec, metrics=metrics)
    store.finish_run(run_id, "ok", {"best": {"split": "1.2/0.8", "objective": 200.0}})
    return run_id


def test_a_sweep_view_names_its_best_split_and_keeps_the_report(ctx: DaemonContext) -> None:
    store = ctx.store
    run_id = record_sweep(store)
    run = store.run(run_id)
    assert run is not None
    view = run_view(run, store.results(run_id), [])
    assert view.sweep is not None
    assert (view.sweep.best, view.sweep.current, view.sweep.points) == ("1.2/0.8", "1/1", 3)
    assert "1.2/0.8" in view.sweep.verdict and view.sweep.verdict in view.markdown
    assert view.title == f"sweep run {run_id}: tiny"


def test_report_files_are_written_once_a_run_finished_and_lately_while_it_runs(
    tmp_path: Path,
) -> None:
    finished = Run.model_validate(
        {"id": 1, "kind": "sweep", "profile": None, "status": "ok", "started_at": 10.0,
         "finished_at": 100.0, "config": {}, "summary": {}}
    )  # fmt: skip
    running = finished.model_copy(update={"finished_at": None, "status": "running"})
    stamp = tmp_path / "report.md"
    assert not fresh(stamp, finished, 200.0)  # never written
    stamp.write_text("# report\n")
    os.utime(stamp, (150.0, 150.0))
    assert fresh(stamp, finished, 10_000.0)  # written after the run finished: for good
    os.utime(stamp, (50.0, 50.0))
    assert not fresh(stamp, finished, 60.0)  # written before it finished
    os.utime(stamp, (1000.0, 1000.0))
    assert fresh(stamp, running, 1000.0 + RUNNING_FRESH_S - 1)
    assert not fresh(stamp, running, 1000.0 + RUNNING_FRESH_S)


# --- the routes, in-process ---------------------------------------------------------------


def test_the_page_and_its_assets_come_from_the_package_only(ctx: DaemonContext) -> None:
    page = call(ctx, "/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == POLICY
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert links and all(not re.match(r"^[a-z]+://|^//", link) for link in links), links
    for asset in ("ui/app.js", "ui/render.js", "ui/style.css"):
        served = call(ctx, f"/{asset}")
        assert served.status_code == 200 and served.text == (
            static_dir() / asset.removeprefix("ui/")
        ).read_text(encoding="utf-8")
        assert served.headers["cache-control"] == "no-cache"  # an upgrade is seen at once
    scripts = "".join(js.read_text(encoding="utf-8") for js in static_dir().glob("*.js"))
    imports = re.findall(r'from\s+"([^"]+)"', scripts)
    assert imports and all(name.startswith("./") for name in imports), imports
    # Every URL the page reads is relative: same origin, no token, any prefix.
    fetched = re.findall(r'(?:get|fetch|EventSource)\(\s*[`"]([^`"]+)', scripts)
    assert fetched and all(not re.match(r"^[a-z]+:|^/", url) for url in fetched), fetched


def test_the_cluster_route_answers_from_the_view_without_touching_a_host(
    ctx: DaemonContext,
) -> None:
    answer = call(ctx, "/api/cluster").json()  # the pool has no hosts: nothing is run
    assert answer["name"] == "desk" and [h["name"] for h in answer["hosts"]] == ["evo", "bee"]
    assert answer["components"] == [] and answer["health_at"] is None
    assert [link["worker"] for link in answer["links"]] == ["bee"]


def test_a_run_s_files_are_written_on_demand_then_reused(ctx: DaemonContext) -> None:
    run_id = record_sweep(ctx.store)
    folder = ctx.state_dir / "reports" / f"report-{run_id}"
    png = call(ctx, f"/api/runs/{run_id}/files/report.png")
    assert png.status_code == 200 and png.content.startswith(PNG_MAGIC)
    assert png.headers["content-type"] == "image/png"
    written = (folder / "report.md").stat().st_mtime_ns
    csv = call(ctx, f"/api/runs/{run_id}/files/results.csv")
    assert csv.status_code == 200 and "1.2/0.8" in csv.text
    assert (folder / "report.md").stat().st_mtime_ns == written  # reused, not redrawn
    view = call(ctx, f"/api/runs/{run_id}/view").json()
    assert view["sweep"]["best"] == "1.2/0.8" and "report.png" in view["files"]
    assert call(ctx, f"/api/runs/{run_id}/files/..%2Fclusterctl.db").status_code == 404
    assert call(ctx, f"/api/runs/{run_id}/files/notes.txt").status_code == 404
    assert call(ctx, "/api/runs/999/files/report.md").status_code == 404
    assert call(ctx, "/api/runs/999/view").status_code == 404


def test_a_run_without_results_has_no_plot(ctx: DaemonContext) -> None:
    run_id = ctx.store.start_run("bench", "tiny", {})
    ctx.store.finish_run(run_id, "failed", {})
    assert "report.png" not in call(ctx, f"/api/runs/{run_id}/view").json()["files"]
    missing = call(ctx, f"/api/runs/{run_id}/files/report.png")
    assert missing.status_code == 404 and "nothing to plot" in missing.json()["detail"]
    assert call(ctx, f"/api/runs/{run_id}/files/report.md").status_code == 200


def test_the_daemon_finds_the_watch_the_dashboard_mounted(ctx: DaemonContext) -> None:
    supervisor = Supervisor(ctx)
    app = build_app(ctx, supervisor, JobRunner(ctx, supervisor))
    assert isinstance(watch_of(app), snapshot.ClusterWatch)
