"""The demo's last act: the daemon, as a user meets it (docs/demo.md).

After the one-shot steps, the real ``clusterctl daemon`` process, started in the background
on the demo's configuration (``demo.DemoSetup``), takes over what serves: it adopts the
running group without a reload, answers a completion through its front door (``/v1``),
brings llama-server back after a SIGKILL, runs a job queued with ``clusterctl submit``,
serves the dashboard; then it stops on SIGTERM (as systemd stops it: what serves keeps
serving, for the next daemon to adopt) and ``clusterctl down`` stops the rest. ``down``
refuses while a daemon runs (exit 8): the daemon owns the cluster.

The demo talks to the daemon as a user does: its commands (``serve``, ``submit``,
``down``) run as ``clusterctl`` processes, its state is read over its Unix socket
(``DaemonClient``), the front door and the dashboard over its TCP listener. Every wait is
for a condition the daemon reports, with a deadline. Each step prints one line; a failure
is one ``ClusterError`` line with its documented exit code, and whatever the demo started
is stopped before it exits.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cluster.config.daemon import DaemonConfig
from cluster.daemon.client import DaemonClient
from cluster.daemon.models import DaemonStatus, Job, JobStatus, ServingState
from cluster.demo import DemoSetup
from cluster.errors import (
    EXIT_CHECK_FAILED,
    EXIT_REMOTE,
    ClusterError,
    HTTPError,
    LaunchError,
    TransportError,
)
from cluster.orchestration import control, processes
from cluster.orchestration.control import LLAMA_SERVER
from cluster.transport.pool import HostPool

POLL_S = 0.2
ANSWER_S = 60.0  # the daemon's API answers
SERVE_S = 180.0  # it serves (adopted, or started from nothing)
RECOVER_S = 120.0  # it serves again after llama-server was killed
JOB_S = 300.0
STOP_S = 60.0  # the daemon exits after SIGTERM (it pauses a job first)
DOWN_S = 180.0
BENCH_OPTIONS = ("tokens=256", "gen=32", "repeat=2")


class DemoFailed(ClusterError):
    """A step of the demo's daemon act failed; ``exit_code`` is the documented one."""

    def __init__(self, message: str, exit_code: int = EXIT_CHECK_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def error_line(text: str) -> str:
    """The ``error: ...`` line of a clusterctl command's stderr (else its last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    chosen = errors[-1] if errors else (lines[-1] if lines else "no output on stderr")
    return chosen.removeprefix("error: ")


def listen_url(config: DaemonConfig) -> str:
    """``http://HOST:PORT`` of the daemon's TCP listener."""
    address = config.address()
    if address is None:
        raise DemoFailed("the demo's hosts.toml has no [daemon] listen", 2)
    host, port = address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def dashboard_lines(config: DaemonConfig) -> list[str]:
    """Where the dashboard is, and how to log in when the listener has a token: the
    variable that holds it, never the token itself."""
    url = f"{listen_url(config)}/"
    if config.token_env is None:
        return [f"dashboard: {url} (no token: the listener is on loopback)"]
    return [
        f"dashboard: {url}; log in once at {url}login?token=${config.token_env} "
        f"(the token is in the environment variable {config.token_env})"
    ]


class DaemonAct:
    """Steps 6 to 11 of the demo, on a cluster whose lease the demo has released."""

    def __init__(
        self, setup: DemoSetup, step: Callable[[str], None], say: Callable[[str], None]
    ) -> None:
        self.setup = setup
        self.step = step
        self.say = say
        self.config = setup.inventory.daemon
        self.log_path = setup.root / "daemon.log"
        configured = self.config.socket
        socket = Path(configured).expanduser() if configured else setup.state_dir / "daemon.sock"
        self.client = DaemonClient(socket, timeout_s=10)
        self.process: subprocess.Popen[bytes] | None = None
        self.profile = setup.profile.name
        self.llama_server = f"{setup.inventory.head.name}/{LLAMA_SERVER}"

    # --- running clusterctl as a user does ------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        setup = self.setup
        return [
            sys.executable,
            "-m",
            "cluster",
            "--config",
            str(setup.hosts_file),
            "--playbooks",
            str(setup.playbooks_dir),
            "--state-dir",
            str(setup.state_dir),
            *args,
        ]

    def clusterctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run one ``clusterctl`` command; its stdout, or its error line as a DemoFailed
        with its exit code."""
        shown = " ".join(("clusterctl", *args))
        try:
            done = subprocess.run(
                self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"`{shown}` did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise DemoFailed(
                f"`{shown}` exited with {done.returncode}: {error_line(done.stderr)}",
                done.returncode,
            )
        return done.stdout

    # --- waiting for what the daemon reports ------------------------------------------------

    def _exited(self) -> DemoFailed | None:
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        return DemoFailed(
            f"clusterctl daemon exited with {code}: {error_line(self._log_text())} "
            f"(log: {self.log_path})",
            code or EXIT_CHECK_FAILED,
        )

    def _log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def until(
        self, ready: Callable[[DaemonStatus], bool], what: str, timeout: float
    ) -> DaemonStatus:
        """The daemon's status once ``ready`` holds; LaunchError past ``timeout``."""
        deadline = time.monotonic() + timeout
        status: DaemonStatus | None = None
        while True:
            exited = self._exited()
            if exited is not None:
                raise exited
            try:
                status = self.client.status()
            except TransportError:
                status = None  # not answering yet
            if status is not None and ready(status):
                return status
            if time.monotonic() > deadline:
                now = f"{status.state.value}: {status.state_reason}" if status else "no answer"
                raise LaunchError(
                    f"the daemon did not report {what} within {timeout:.0f} s ({now}); "
                    f"its log: {self.log_path}"
                )
            time.sleep(POLL_S)

    def _serving(self, status: DaemonStatus) -> bool:
        return status.state is ServingState.SERVING and status.serving.profile == self.profile

    # --- the steps --------------------------------------------------------------------------

    def start(self) -> None:
        self.step(f"6. daemon (clusterctl daemon, log in {self.log_path})")
        started = time.time()
        with self.log_path.open("wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                self.argv("daemon"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # a Ctrl-C meant for the demo is the demo's to handle
            )
        self.until(lambda status: True, "that its API answers", ANSWER_S)
        self.clusterctl("serve", self.profile)
        status = self.until(self._serving, f"serving {self.profile}", SERVE_S)
        since = status.serving.since or time.time()
        how = "adopted what serves, no reload" if since < started else "started it"
        self.say(
            f"daemon pid {self.process.pid} serving {self.profile} at "
            f"{status.serving.endpoint} ({how}) {time.time() - started:.1f} s after it started"
        )

    def front_door(self) -> None:
        url = f"{listen_url(self.config)}/v1/completions"
        self.step(f"7. front door (POST {url})")
        body = {"prompt": "The cluster", "max_tokens": 16}
        began = time.monotonic()
        try:
            response = httpx.post(url, json=body, timeout=120)
        except httpx.HTTPError as exc:
            raise HTTPError(f"front door: POST {url}: {exc}") from None
        seconds = time.monotonic() - began
        if response.status_code != 200:
            raise HTTPError(f"front door: POST {url}: HTTP {response.status_code}: "
                            f"{response.text[:200]}")  # fmt: skip
        try:
            tokens = response.json()["usage"]["completion_tokens"]
        except (ValueError, KeyError, TypeError):
            raise HTTPError(f"front door: POST {url}: no usage in {response.text[:200]}") from None
        self.say(f"front door: {tokens} tokens generated in {seconds:.2f} s, HTTP 200 from {url}")

    def crash(self) -> None:
        self.step("8. kill llama-server (SIGKILL); the daemon brings it back")
        before = self.client.status().serving.pids.get(self.llama_server)
        killed_at = time.time()
        try:
            asyncio.run(self._kill_llama_server())
        except LookupError as exc:
            raise DemoFailed(f"nothing to kill: {exc}") from None
        killed = time.monotonic()

        def back(status: DaemonStatus) -> bool:
            now = status.serving.pids.get(self.llama_server)
            return self._serving(status) and now is not None and now != before

        after = self.until(back, "serving again after the kill", RECOVER_S)
        seconds = time.monotonic() - killed
        incident = next((i for i in after.incidents if i.started >= killed_at), None)
        what = (
            f"incident {incident.cls.value} ({incident.cause or 'no cause'}), "
            f"{incident.restarts} restart(s)"
            if incident is not None
            else "no incident recorded"
        )
        self.say(f"llama-server killed; serving again {seconds:.1f} s later: {what}")

    async def _kill_llama_server(self) -> None:
        head = self.setup.inventory.head
        async with HostPool([head]) as pool:
            await processes.signal_component(pool[head.name], head.run_dir, LLAMA_SERVER, "KILL")

    def bench_job(self) -> None:
        options = [part for option in BENCH_OPTIONS for part in ("-o", option)]
        shown = " ".join(("clusterctl submit bench", self.profile, *options))
        self.step(f"9. queued job ({shown})")
        job = Job.model_validate_json(
            self.clusterctl("submit", "bench", self.profile, *options, "--json")
        )

        def finished(status: DaemonStatus) -> bool:
            return any(j.id == job.id and j.status.finished for j in status.jobs)

        status = self.until(finished, f"job {job.id} finished", JOB_S)
        done = next(j for j in status.jobs if j.id == job.id)
        took = (done.finished or 0.0) - (done.started or done.created)
        if done.status is not JobStatus.DONE or done.run_id is None:
            message = done.message.splitlines()[0] if done.message else "no message"
            raise DemoFailed(f"job {done.id}: {done.describe} {done.status.value}: {message}")
        # After a job the daemon restores the desired state (here: adopts what still serves).
        self.until(self._serving, f"serving {self.profile} again after the job", SERVE_S)
        self.say(f"job {done.id}: {done.describe} {done.status.value} in {took:.1f} s: "
                 f"{self._bench_line(done.run_id)}")  # fmt: skip

    def _bench_line(self, run_id: int) -> str:
        from cluster.measure.records import median_of
        from cluster.report.tables import summary_line
        from cluster.store import Store

        with Store(self.setup.state_dir) as store:
            results = store.results(run_id)
        rates = [
            f"{name} {value:.0f} t/s"
            for result in results[:1]
            for name, value in (
                ("pp", median_of(result.metrics, "pp_tps")),
                ("tg", median_of(result.metrics, "tg_tps")),
            )
            if value is not None
        ]
        return ", ".join([f"run {run_id}", summary_line(results), *rates])

    def dashboard(self) -> None:
        self.step("10. dashboard")
        url = f"{listen_url(self.config)}/"
        if self.config.token_env is None:  # with a token, only its holder can look
            try:
                code = httpx.get(url, timeout=30).status_code
            except httpx.HTTPError as exc:
                raise HTTPError(f"dashboard: GET {url}: {exc}") from None
            if code != 200:
                raise HTTPError(f"dashboard: GET {url}: HTTP {code}")
        for line in dashboard_lines(self.config):
            self.say(line)

    def down(self) -> None:
        self.step("11. down (SIGTERM to the daemon, as systemd stops it; then clusterctl down)")
        code = self.stop_daemon()
        if code != 0:
            raise DemoFailed(
                f"clusterctl daemon exited with {code} on SIGTERM: "
                f"{error_line(self._log_text())} (log: {self.log_path})",
                EXIT_REMOTE,
            )
        served = asyncio.run(self._running())  # left serving, for the next daemon to adopt
        self.clusterctl("down", timeout=DOWN_S)
        left = asyncio.run(self._running())
        if left:
            raise DemoFailed(f"still running after down: {', '.join(left)}", EXIT_REMOTE)
        hosts = ", ".join(self.setup.inventory.hosts)
        self.say(
            f"daemon stopped (exit {code}); clusterctl down stopped "
            f"{', '.join(served) or 'nothing'}; nothing left running on {hosts}"
        )

    def stop_daemon(self) -> int | None:
        """SIGTERM, as systemd and Ctrl-C stop it: the daemon pauses its job, closes its API
        and leaves what serves running; SIGKILL when it is still there after ``STOP_S``.
        Its exit code (None when it was never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    async def _running(self) -> list[str]:
        inventory = self.setup.inventory
        async with HostPool(inventory.hosts.values()) as pool:
            rows, unreachable = await control.status(pool, inventory)
        running = [f"{row.host}/{row.component}" for row in rows]
        return running + [f"{host}: {why}" for host, why in unreachable.items()]

    # --- the whole act ----------------------------------------------------------------------

    def run(self, *, keep: bool = False) -> None:
        """Every step; on a failure (or Ctrl-C), stop what was started, then raise."""
        try:
            self.start()
            self.front_door()
            self.crash()
            self.bench_job()
            self.dashboard()
            if keep:
                assert self.process is not None
                self.say(
                    f"the daemon (pid {self.process.pid}) keeps serving; to stop it: kill "
                    f"{self.process.pid} (what it serves keeps serving), then clusterctl "
                    f"--config {self.setup.hosts_file} down"
                )
            else:
                self.down()
        except BaseException:
            self.abandon()
            raise
        finally:
            self.client.close()

    def abandon(self) -> None:
        """After a failure: stop the daemon, then everything it served."""
        self.stop_daemon()
        self.step("down (after the failure)")
        try:
            self.clusterctl("down", timeout=DOWN_S)
        except DemoFailed as exc:
            self.say(f"warning: {exc}")
