"""The dashboard's real path: the local cluster's daemon (``dashboard_support``), serving
the tiny model on the current llama.cpp build, shared by a module's tests; the system
Chromium driven by Playwright with a fresh profile per test, logged in the way a person
does (``/login?token=...`` sets the cookie; a daemon without that login gets the bearer
token as a header), collecting every console error and uncaught page error for the test
to assert on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SWEEP,
    Browser,
    LocalDaemon,
    free_port,
    hosts_toml,
    profile_toml,
)

from cluster.testbed.models import TINY, cached_model


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, current_bin: Path) -> Iterator[LocalDaemon]:
    """The daemon of a fresh local cluster, serving the tiny profile."""
    root = tmp_path_factory.mktemp("dashboard")
    started = LocalDaemon(root, free_port("127.0.0.1"))
    (root / "hosts.toml").write_text(hosts_toml(root, current_bin, f"127.0.0.1:{started.port}"))
    playbooks = root / "playbooks"
    (playbooks / "sweeps").mkdir(parents=True)
    model = cached_model(TINY)[0]
    (playbooks / "tiny.toml").write_text(profile_toml(model, free_port("127.0.0.1")))
    (playbooks / "sweeps" / "split.toml").write_text(SWEEP)
    started.start()
    try:
        client = started.client
        client.set_desired("tiny")
        client.close()
        started.serving()
        yield started
    finally:
        started.stop()


def cookie_login(daemon: LocalDaemon) -> bool:
    """Whether the daemon's TCP door has the browser login (``/login`` sets a cookie);
    without it the browser sends the bearer token as a header instead."""
    login = httpx.get(f"{daemon.url}/login", params={"token": daemon.token}, timeout=10)
    return login.status_code == 303 and "set-cookie" in login.headers


@pytest.fixture
def browser(daemon: LocalDaemon, tmp_path: Path) -> Iterator[Browser]:
    """Chromium on the dashboard, logged in through /login."""
    from playwright.sync_api import sync_playwright

    cookie = cookie_login(daemon)
    headers = {} if cookie else {"Authorization": f"Bearer {daemon.token}"}
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
            extra_http_headers=headers,
        )
        try:
            page = context.new_page()
            seen = Browser(page, [], [], tmp_path)
            page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: seen.errors.append(f"page error: {error}"))
            page.on("request", lambda request: seen.urls.append(request.url))
            if cookie:
                page.goto(f"{daemon.url}/login?token={daemon.token}")  # redirected to the page
            else:
                page.goto(daemon.url)
            yield seen
        finally:
            context.close()
