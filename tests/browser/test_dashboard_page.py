"""The dashboard in a real browser, against a real daemon serving a real (local) cluster:
the page loads without errors and shows the hosts and what serves; it follows a killed
llama-server to its recovery within seconds; it shows a sweep's result with its plot."""

from __future__ import annotations

import os
import signal
import time

import pytest
from dashboard_support import Browser, LocalDaemon

from cluster.daemon.models import JobKind, JobRequest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Every change of the state badge, with the browser's clock (ms), kept by the page itself:
# a short "recovering" is seen even when it lasts less than one poll of the test.
WATCH_STATE = """() => {
  window.seenStates = [];
  const badge = document.getElementById("state");
  new MutationObserver(() => window.seenStates.push([Date.now(), badge.textContent]))
    .observe(badge, { childList: true, characterData: true, subtree: true });
}"""


def expect_ok(browser: Browser) -> None:
    assert browser.errors == [], browser.errors
    leaked = [url for url in browser.urls if "token=" in url and "/login?" not in url]
    assert leaked == []  # the page never puts the token in a URL of its own


def test_the_page_shows_the_hosts_and_the_serving_profile(
    daemon: LocalDaemon, browser: Browser
) -> None:
    from playwright.sync_api import expect

    page = browser.page
    status = daemon.serving()
    expect(page.locator("#state")).to_have_text("serving", timeout=10_000)
    expect(page.locator("#serving-profile")).to_have_text("tiny split 1/1")
    expect(page.locator("#cluster-name")).to_have_text("desk")
    for host, address in (("evo", "127.0.0.2"), ("bee", "127.0.0.3")):
        row = page.locator(f'#hosts tr[data-host="{host}"]')
        expect(row).to_contain_text(address)
        expect(row).to_contain_text("serving")
    for name, pid in status.serving.pids.items():
        expect(page.locator(f'#pids li[data-component="{name}"] code')).to_have_text(str(pid))
        component = page.locator(f'#components tr[data-component="{name}"]')
        expect(component).to_contain_text(str(pid), timeout=15_000)
    # The background watch judges health against the desired profile; the link is up.
    expect(page.locator("#health-summary")).to_contain_text("against tiny", timeout=30_000)
    expect(page.locator("#health-summary")).to_contain_text("0 fail")
    expect(page.locator('#links tr[data-worker="bee"]')).to_contain_text("up")
    expect(page.locator("#live")).to_have_text("live")
    browser.screenshot("dashboard-cluster.png")
    expect_ok(browser)


def test_the_page_follows_a_killed_llama_server_back_to_serving(
    daemon: LocalDaemon, browser: Browser
) -> None:
    from playwright.sync_api import expect

    page = browser.page
    before = daemon.serving()
    old_pid = before.serving.pids["evo/llama-server"]
    pid_cell = page.locator('#pids li[data-component="evo/llama-server"] code')
    expect(pid_cell).to_have_text(str(old_pid), timeout=10_000)
    page.evaluate(WATCH_STATE)
    started = page.evaluate("Date.now()")
    os.kill(daemon.component_pid("evo", "llama-server"), signal.SIGKILL)

    page.wait_for_function(
        "() => window.seenStates.some(([, state]) => state !== 'serving')", timeout=10_000
    )
    noticed_ms = next(at for at, s in page.evaluate("window.seenStates") if s != "serving")
    assert noticed_ms - started < 5_000  # the page said so within seconds (probe: 1 s)
    newest = page.locator("#timeline li").first
    expect(newest).to_have_class("open", timeout=5_000)  # an incident, not recovered yet

    after = daemon.until(
        lambda s: s.state.value == "serving" and s.serving.pids != before.serving.pids,
        "serving again",
    )
    incident = after.incidents[0]  # the page shows the record's class and evidence
    expect(newest).to_contain_text(incident.cls.value)
    expect(newest).to_contain_text(incident.evidence)
    new_pid = str(after.serving.pids["evo/llama-server"])
    expect(page.locator("#state")).to_have_text("serving", timeout=10_000)
    expect(pid_cell).to_have_text(new_pid, timeout=10_000)
    expect(page.locator('#components tr[data-component="evo/llama-server"]')).to_contain_text(
        new_pid, timeout=15_000
    )
    expect(newest).to_contain_text("recovered after")
    expect(newest).to_have_class("recovered")
    browser.screenshot("dashboard-incident.png", "#incidents")
    expect_ok(browser)


def test_a_sweep_s_result_shows_its_plot_and_files(daemon: LocalDaemon, browser: Browser) -> None:
    from playwright.sync_api import expect

    page = browser.page
    daemon.serving()
    client = daemon.client
    try:
        job = client.submit(JobRequest(kind=JobKind.SWEEP, target="split"))
    finally:
        client.close()
    row = page.locator(f'#queue tr[data-job="{job.id}"]')
    expect(row).to_have_attribute("data-status", "done", timeout=300_000)
    started = time.monotonic()
    row.locator("a").click()  # run N: the result opens below the runs
    plot = page.locator("#run-plot")
    expect(plot).to_be_visible(timeout=30_000)
    page.wait_for_function(
        "() => { const i = document.getElementById('run-plot');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=60_000,
    )
    assert time.monotonic() - started < 60
    view = page.locator("#run-view")
    # The report's verdict (a best split, or none beyond the noise) and every point.
    expect(view.locator(".verdict")).to_contain_text("split")
    for split in ("0.8/1.2", "1/1", "1.2/0.8"):
        expect(view.locator("table.report")).to_contain_text(split)
    bodies = {}
    for name in ("report.md", "report.png", "results.json", "results.csv"):
        href = view.locator(f'.downloads a:text-is("{name}")').get_attribute("href")
        assert href is not None and "token" not in href
        answer = page.request.get(f"{daemon.url}/{href}")  # the cookie, as a click would
        assert answer.status == 200, (name, answer.status)
        bodies[name] = answer.body()
    assert bodies["report.png"].startswith(b"\x89PNG")
    assert b"0.8/1.2" in bodies["results.csv"] and b"0.8/1.2" in bodies["report.md"]
    daemon.serving(timeout=180)  # the job gave the cluster back
    browser.screenshot("dashboard-results.png", "#results")
    expect_ok(browser)
