"""No traceback ever reaches a user: every bad input is one line naming what is wrong and
where, with its documented exit code (docs/cli.md).

These drive the real ``python -m cluster`` in a subprocess against local-transport hosts
(no llama.cpp, no root needed); the boundary itself is also tested in-process.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from dashboard_support import free_port
from support import REPO, clusterctl, one_error_line, user_env

from cluster.cli.boundary import guarded, internal_line, one_line, verbosity
from cluster.errors import (
    EXIT_CHECK_FAILED,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORE,
    ConfigError,
    StoreError,
)
from cluster.store import Store

HOSTS = """[cluster]
head = "a"

[hosts.a]
transport = "local"
link_address = "127.0.0.2"
link_interface = "lo"
rpc_port = {port_a}
llama_bin_dir = "{root}/bin"
run_dir = "{root}/run/a"

[hosts.b]
transport = "local"
link_address = "127.0.0.3"
link_interface = "lo"
rpc_port = {port_b}
llama_bin_dir = "{root}/bin"
run_dir = "{root}/run/b"
"""

PROFILE = 'model = "/nonexistent/m.gguf"\nrpc_hosts = ["a", "b"]\ntensor_split = "1/1"\n'
SCREEN = 'targets = [100]\n[[configs]]\nname = "c"\nprofile = "p"\n'
SWEEP = 'profile = "p"\nsplits = ["1/1", "1.2/0.8"]\n'


class Setup:
    """A two-host local cluster in a temporary folder: hosts.toml, playbooks, state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts = root / "hosts.toml"
        self.playbooks = root / "playbooks"
        self.state = root / "state"
        (root / "bin").mkdir()  # an empty llama.cpp folder: health fails, nothing crashes
        for sub in ("screens", "sweeps"):
            (self.playbooks / sub).mkdir(parents=True)
        # Free ports: a cluster this machine serves meanwhile (the demo's) must not
        # make the port check of these tests fail.
        ports = {"port_a": free_port("127.0.0.2"), "port_b": free_port("127.0.0.3")}
        self.hosts.write_text(HOSTS.format(root=root, **ports))
        (self.playbooks / "p.toml").write_text(PROFILE)
        (self.playbooks / "screens" / "s.toml").write_text(SCREEN)
        (self.playbooks / "sweeps" / "w.toml").write_text(SWEEP)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "CLUSTERCTL_CONFIG": str(self.hosts),
            "CLUSTERCTL_STATE_DIR": str(self.state),
            **extra,
        }

    def run_dir(self, host: str) -> Path:
        path = self.root / "run" / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    def edit_hosts(self, old: str, new: str) -> None:
        """Replace the first ``old`` (host a's line) in hosts.toml."""
        text = self.hosts.read_text()
        assert old in text
        self.hosts.write_text(text.replace(old, new, 1))


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def run(setup: Setup, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return clusterctl(*args, env=setup.env(**env), cwd=setup.root)


# --- files that are not UTF-8 -------------------------------------------------------------


def test_hosts_toml_that_is_not_utf8(setup: Setup) -> None:
    before = setup.hosts.read_bytes()
    setup.hosts.write_bytes(before + b"# caf\xe9\n")
    result = run(setup, "status")
    assert result.returncode == EXIT_CONFIG
    line = before.count(b"\n") + 1
    assert one_error_line(result) == (
        f"error: {setup.hosts}: not UTF-8 text: byte 0xe9 at offset {len(before) + 5} (line {line})"
    )


def test_profile_that_is_not_utf8(setup: Setup) -> None:
    path = setup.playbooks / "p.toml"
    path.write_bytes(b'description = "\xff"\n' + PROFILE.encode())
    named = run(setup, "config", "check", "p")
    assert named.returncode == EXIT_CONFIG
    expected = f"error: {path}: not UTF-8 text: byte 0xff at offset 15 (line 1)"
    assert one_error_line(named) == expected
    up = run(setup, "up", "p", "--skip-health")
    assert up.returncode == EXIT_CONFIG and one_error_line(up) == expected
    # Checking every profile, a broken one still fails the check, with the same line.
    every = run(setup, "config", "check")
    assert every.returncode == EXIT_CONFIG
    assert one_error_line(every) == expected
    assert "invalid" in every.stdout


# --- inf, nan and NUL in any field --------------------------------------------------------

FINITE = "Input should be a finite number"
NUL = r"contains a NUL character (\u0000)"


@pytest.mark.parametrize(
    ("where", "text", "command", "key", "message"),
    [
        ("hosts", "memory_budget_gib = inf", ("status",), "hosts.a.memory_budget_gib", FINITE),
        ("hosts", "memory_budget_gib = nan", ("status",), "hosts.a.memory_budget_gib", FINITE),
        ("hosts", "connect_timeout_s = inf", ("status",), "hosts.a.connect_timeout_s", FINITE),
        ("hosts", 'command_prefix = ["a\\u0000"]', ("down",), "hosts.a.command_prefix", NUL),
        ("hosts", 'env = { A = "x\\u0000y" }', ("down",), "hosts.a.env", NUL),
        ("hosts", 'rpc_cache_dir = "/c\\u0000"', ("down",), "hosts.a.rpc_cache_dir", NUL),
        ("profile", "tensor_split = [inf, 1]", ("up", "p"), "tensor_split", "finite numbers"),
        ("profile", 'tensor_split = "nan/1"', ("up", "p"), "tensor_split", "finite numbers"),
        ("profile", "load_timeout_s = inf", ("up", "p"), "load_timeout_s", FINITE),
        ("profile", "retry_backoff_s = nan", ("health", "p"), "retry_backoff_s", FINITE),
        ("profile", 'model = "/m\\u0000.gguf"', ("up", "p"), "model", NUL),
        ("profile", 'extra_args = ["--x\\u0000"]', ("bench", "p"), "extra_args", NUL),
        ("screen", "stall_timeout_s = inf", ("screen", "s"), "stall_timeout_s", FINITE),
        ("screen", 'description = "\\u0000"', ("screen", "s"), "description", NUL),
        ("sweep", "tolerance = nan", ("sweep", "w"), "tolerance", FINITE),
        (
            "sweep",
            "[measure]\nstall_timeout_s = inf",
            ("sweep", "w"),
            "measure.stall_timeout_s",
            FINITE,
        ),
        (
            "sweep",
            "[objective]\nweights = { pp = inf }",
            ("sweep", "w"),
            "objective.weights.pp",
            FINITE,
        ),
        ("sweep", 'description = "a\\u0000"', ("sweep", "w"), "description", NUL),
    ],
)
def test_inf_nan_and_nul_are_refused_naming_file_and_key(
    setup: Setup, where: str, text: str, command: tuple[str, ...], key: str, message: str
) -> None:
    if where == "hosts":
        path = setup.hosts
        setup.edit_hosts('run_dir = "', f'{text}\nrun_dir = "')
    else:
        path = {
            "profile": setup.playbooks / "p.toml",
            "screen": setup.playbooks / "screens" / "s.toml",
            "sweep": setup.playbooks / "sweeps" / "w.toml",
        }[where]
        add_line(path, text)
    result = run(setup, *command)
    assert result.returncode == EXIT_CONFIG
    line = one_error_line(result)
    assert line.startswith(f"error: {path}: {key}: "), line
    assert message in line


def add_line(path: Path, text: str) -> None:
    """Put a key first in a playbook (replacing the key if it is there), or a table last."""
    lines = path.read_text().splitlines()
    if text.startswith("["):
        lines.append(text)
    else:
        key = text.split("=")[0].strip()
        lines = [text, *(line for line in lines if not line.startswith(f"{key} ="))]
    path.write_text("\n".join(lines) + "\n")


# --- ~ is the home directory --------------------------------------------------------------


def test_tilde_in_hosts_toml_is_the_home_directory(setup: Setup) -> None:
    home, cwd = setup.root / "home", setup.root / "cwd"
    home.mkdir()
    cwd.mkdir()
    setup.edit_hosts(
        'head = "a"\n',
        'head = "a"\n\n[controller]\nstate_dir = "~/state"\nplaybooks_dir = "~/books"\n',
    )
    result = clusterctl(
        "runs", "--json", env={"CLUSTERCTL_CONFIG": str(setup.hosts), "HOME": str(home)}, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert (home / "state" / "clusterctl.db").is_file()
    for folder in (cwd, setup.root):
        assert not (folder / "~").exists()
    check = clusterctl(
        "config",
        "check",
        "--json",
        env={"CLUSTERCTL_CONFIG": str(setup.hosts), "HOME": str(home)},
        cwd=cwd,
    )
    sources = json.loads(check.stdout)["sources"]
    assert sources["state_dir"] == str(home / "state")
    assert sources["playbooks_dir"] == str(home / "books")


def test_tilde_in_flags_and_environment_is_the_home_directory(setup: Setup) -> None:
    home = setup.root / "home"
    home.mkdir()
    by_flag = clusterctl(
        "--state-dir",
        "~/flag",
        "runs",
        env={"CLUSTERCTL_CONFIG": str(setup.hosts), "HOME": str(home)},
        cwd=setup.root,
    )
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = clusterctl(
        "runs",
        env={
            "CLUSTERCTL_CONFIG": str(setup.hosts),
            "CLUSTERCTL_STATE_DIR": "~/env",
            "HOME": str(home),
        },
        cwd=setup.root,
    )
    assert by_env.returncode == 0, by_env.stderr
    assert (home / "flag" / "clusterctl.db").is_file()
    assert (home / "env" / "clusterctl.db").is_file()
    assert not (setup.root / "~").exists()


def test_tilde_in_ssh_paths_is_the_home_directory(setup: Setup) -> None:
    home = setup.root / "home"
    home.mkdir()
    text = setup.hosts.read_text()
    setup.hosts.write_text(
        text.replace('transport = "local"', 'ssh_key = "~/.ssh/id_x"\nknown_hosts = "~/kh"', 1)
    )
    result = clusterctl(
        "config",
        "check",
        "--json",
        env={"CLUSTERCTL_CONFIG": str(setup.hosts), "HOME": str(home)},
        cwd=setup.root,
    )
    assert result.returncode == 0, result.stderr
    host = json.loads(result.stdout)["inventory"]["hosts"]["a"]
    assert (host["ssh_key"], host["known_hosts"]) == (
        str(home / ".ssh" / "id_x"),
        str(home / "kh"),
    )


def test_tilde_of_an_unknown_user_is_one_line(setup: Setup) -> None:
    setup.edit_hosts('head = "a"\n', 'head = "a"\n\n[controller]\nstate_dir = "~nosuchuser9/s"\n')
    result = run(setup, "runs")
    assert result.returncode == EXIT_CONFIG
    line = one_error_line(result)
    assert line.startswith(f"error: {setup.hosts}: controller.state_dir: cannot expand ~")


# --- the record: an unusable state directory, a locked database ------------------------------


def test_state_directory_under_a_file(setup: Setup) -> None:
    blocker = setup.root / "afile"
    blocker.write_text("not a directory\n")
    result = run(setup, "runs", CLUSTERCTL_STATE_DIR=str(blocker / "state"))
    assert result.returncode == EXIT_STORE
    assert one_error_line(result) == (
        f"error: {blocker / 'state'}: cannot create the state directory: "
        "a part of its path is a file, not a directory"
    )


def test_state_directory_that_is_a_file(setup: Setup) -> None:
    blocker = setup.root / "afile"
    blocker.write_text("not a directory\n")
    result = run(setup, "show", "1", CLUSTERCTL_STATE_DIR=str(blocker))
    assert result.returncode == EXIT_STORE
    assert one_error_line(result) == (
        f"error: {blocker}: cannot create the state directory: it exists and is not a directory"
    )


def test_a_file_that_is_not_a_database(setup: Setup) -> None:
    setup.state.mkdir()
    (setup.state / "clusterctl.db").write_bytes(b"this is not sqlite" * 100)
    result = run(setup, "runs")
    assert result.returncode == EXIT_STORE
    line = one_error_line(result)
    assert line.startswith(f"error: {setup.state / 'clusterctl.db'}: file is not a database")


@pytest.mark.slow
def test_database_locked_past_the_busy_timeout(setup: Setup) -> None:
    setup.state.mkdir()
    holder = sqlite3.connect(setup.state / "clusterctl.db", isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        result = run(setup, "runs")
    finally:
        holder.close()
    assert result.returncode == EXIT_STORE
    line = one_error_line(result)
    assert line.startswith(f"error: {setup.state / 'clusterctl.db'}: database is locked")
    assert "another process holds it locked (waited 30 s)" in line


def test_a_report_folder_that_cannot_be_made(setup: Setup) -> None:
    with Store(setup.state) as store:
        run_id = store.start_run("bench", "p", {})
    blocker = setup.root / "afile"
    blocker.write_text("not a directory\n")
    result = run(setup, "report", str(run_id), "--out", str(blocker / "report"))
    assert result.returncode == EXIT_CONFIG
    assert one_error_line(result) == (
        f"error: {blocker / 'report'}: --out: cannot write the report: Not a directory"
    )


def test_a_report_goes_under_the_state_directory_unless_out_says(setup: Setup) -> None:
    with Store(setup.state) as store:
        run_id = store.start_run("bench", "p", {})
    result = run(setup, "report", str(run_id))
    assert result.returncode == 0, result.stderr
    folder = setup.state / "reports" / f"report-{run_id}"
    assert sorted(p.name for p in folder.iterdir()) == ["report.md", "results.csv", "results.json"]
    written = [str(folder / name) for name in ("report.md", "results.json", "results.csv")]
    assert result.stdout.splitlines() == written
    assert result.stderr.strip() == f"report of run {run_id} written to {folder}"
    # Nothing in the directory the command ran in.
    assert not list(setup.root.glob("report-*"))
    chosen = setup.root / "chosen"
    again = run(setup, "report", str(run_id), "--out", str(chosen))
    assert again.returncode == 0, again.stderr
    assert (chosen / "report.md").is_file()
    assert again.stderr.strip() == f"report of run {run_id} written to {chosen}"


# --- pid files that are empty, truncated or garbage ---------------------------------------

BAD_PID_FILES = {
    "empty": "",
    "truncated": "4242",
    "garbage": "not a pid file\n",
    "one": "1 12345\n",
}


@pytest.mark.parametrize("content", BAD_PID_FILES.values(), ids=BAD_PID_FILES.keys())
def test_status_shows_an_invalid_pid_file(setup: Setup, content: str) -> None:
    (setup.run_dir("b") / "rpc-server.pid").write_text(content)
    result = run(setup, "status", "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [row] = json.loads(result.stdout)["components"]
    assert (row["host"], row["component"], row["pid"], row["state"], row["alive"]) == (
        "b",
        "rpc-server",
        None,
        "invalid",
        False,
    )
    table = run(setup, "status")
    assert table.returncode == 0 and "invalid pid file" in table.stdout


@pytest.mark.parametrize("content", BAD_PID_FILES.values(), ids=BAD_PID_FILES.keys())
def test_down_removes_an_invalid_pid_file_and_says_so(setup: Setup, content: str) -> None:
    run_dir = setup.run_dir("a")
    (run_dir / "llama-server.pid").write_text(content)
    (run_dir / "llama-server.json").write_text('{"port": 18080}')
    result = run(setup, "down")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["a: llama-server: invalid pid file removed"]
    # Only the lock files of the host and of the cluster lease stay (they are never removed:
    # another controller may be waiting on them).
    assert sorted(p.name for p in run_dir.iterdir()) == [".clusterctl.lock", "cluster.lease.lock"]
    again = run(setup, "down")
    assert again.returncode == 0 and "nothing was running" in again.stderr


@pytest.mark.parametrize("content", ["", "4242"], ids=["empty", "truncated"])
def test_health_reads_an_invalid_pid_file(setup: Setup, content: str) -> None:
    (setup.run_dir("a") / "rpc-server.pid").write_text(content)
    result = run(setup, "health", "--json", "--quick")
    # The empty llama.cpp folder fails the binaries check; the pid file fails nothing.
    assert result.returncode == EXIT_CHECK_FAILED, result.stderr
    assert "Traceback" not in result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert {c["host"]: c["level"] for c in checks if c["name"] == "ssh"} == {"a": "ok", "b": "ok"}
    failed = {(c["host"], c["name"]) for c in checks if c["level"] == "fail"}
    assert failed == {("a", "binaries"), ("b", "binaries")}


# --- config check: a profile for another cluster is that profile's problem ------------------


def test_config_check_lists_a_profile_that_does_not_fit(setup: Setup) -> None:
    other = setup.playbooks / "other.toml"
    other.write_text(PROFILE.replace('"1/1"', '"1/1/1"'))
    every = run(setup, "config", "check")
    assert every.returncode == 0, every.stderr
    assert "other" in every.stdout and "does not fit" in every.stdout
    assert "split 1/1/1 has 3 entries but the cluster has 2 devices" in every.stdout
    document = json.loads(run(setup, "config", "check", "--json").stdout)
    assert sorted(document["profiles"]) == ["p"]
    assert list(document["unfit"]) == ["other"] and document["invalid"] == {}
    named = run(setup, "config", "check", "other")
    assert named.returncode == EXIT_CONFIG
    assert "tensor_split: split 1/1/1 has 3 entries" in one_error_line(named)


def test_the_shipped_example_and_playbooks_check_clean(tmp_path: Path) -> None:
    (tmp_path / "hosts.toml").write_text((REPO / "hosts.example.toml").read_text())
    result = clusterctl(
        "--playbooks", str(REPO / "playbooks"), "config", "check", "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["unfit"], document["invalid"]) == ({}, {})
    assert "minimax-q8" in document["profiles"]


# --- the boundary: an unexpected exception is one line, exit 70 -----------------------------

INJECT = """
import sys
from cluster.orchestration import control

async def broken(*args, **kwargs):
    raise RuntimeError("injected fault\\nsecond line")

control.status = broken
from cluster.cli.main import run
sys.argv = ["clusterctl", *sys.argv[1:]]
run()
"""


def inject(setup: Setup, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a subprocess, with ``control.status`` replaced by one that
    raises what no code expects."""
    clean = user_env()
    return subprocess.run(
        [sys.executable, "-c", INJECT, *args],
        capture_output=True,
        text=True,
        env={**clean, **setup.env(**env)},
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_an_unexpected_exception_is_one_line_and_exit_70(setup: Setup) -> None:
    result = inject(setup, "status")
    assert result.returncode == EXIT_INTERNAL
    assert one_error_line(result) == "error: internal: RuntimeError: injected fault | second line"


@pytest.mark.parametrize(
    ("args", "env"), [(("-v", "status"), {}), (("status",), {"CLUSTERCTL_VERBOSE": "1"})]
)
def test_verbose_adds_the_traceback(
    setup: Setup, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = inject(setup, *args, **env)
    assert result.returncode == EXIT_INTERNAL
    lines = result.stderr.splitlines()
    assert "error: internal: RuntimeError: injected fault | second line" in lines
    assert "Traceback (most recent call last):" in lines
    assert lines[-2:] == ["RuntimeError: injected fault", "second line"]


def test_usage_errors_keep_clicks_message_and_exit_2(setup: Setup) -> None:
    unknown = run(setup, "frobnicate")
    assert unknown.returncode == 2 and "No such command 'frobnicate'" in unknown.stderr
    missing = run(setup, "up")
    assert missing.returncode == 2 and "Missing argument 'profile'" in missing.stderr
    assert "Traceback" not in unknown.stderr + missing.stderr


def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (RuntimeError("boom"), EXIT_INTERNAL, "error: internal: RuntimeError: boom"),
        (KeyError("k"), EXIT_INTERNAL, "error: internal: KeyError: 'k'"),
        (AssertionError(), EXIT_INTERNAL, "error: internal: AssertionError"),
        (ConfigError("bad", file="f.toml", key="k"), EXIT_CONFIG, "error: f.toml: k: bad"),
        (
            StoreError("/s/clusterctl.db", "locked\nhard"),
            EXIT_STORE,
            "error: /s/clusterctl.db: locked | hard",
        ),
        (
            ExceptionGroup("two", [ValueError("x"), ConfigError("first")]),
            EXIT_CONFIG,
            "error: first",
        ),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    ],
)
def test_the_boundary_in_process(raised: BaseException, code: int, line: str) -> None:
    stderr = io.StringIO()
    assert guarded(lambda: _raise(raised), lambda: 0, stderr) == code
    assert stderr.getvalue() == line + "\n"


def _app(raised: BaseException) -> typer.Typer:
    """A one-command typer app whose command raises ``raised``."""
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.command()
    def go() -> None:
        raise raised

    return app


def test_the_boundary_around_a_typer_app() -> None:
    app = _app(RuntimeError("from a command"))
    quiet = io.StringIO()
    assert guarded(lambda: app([]), lambda: 0, quiet) == EXIT_INTERNAL
    assert quiet.getvalue() == "error: internal: RuntimeError: from a command\n"
    verbose = io.StringIO()
    assert guarded(lambda: app([]), lambda: 1, verbose) == EXIT_INTERNAL
    assert verbose.getvalue().startswith("error: internal: RuntimeError: from a command\n")
    assert "Traceback (most recent call last):" in verbose.getvalue()
    # typer exits with 130 on Ctrl-C itself; the boundary lets that exit through.
    interrupted = _app(KeyboardInterrupt())
    with pytest.raises(SystemExit) as exited:
        guarded(lambda: interrupted([]), lambda: 0, io.StringIO())
    assert exited.value.code == EXIT_INTERRUPTED


def test_the_boundary_passes_a_clean_exit() -> None:
    assert guarded(lambda: None, lambda: 0) == EXIT_OK
    with pytest.raises(SystemExit) as exited:
        guarded(lambda: sys.exit(3), lambda: 0)
    assert exited.value.code == 3


def test_helpers() -> None:
    assert one_line("a\n\n  b  \n") == "a | b"
    assert internal_line(ValueError("")) == "error: internal: ValueError"
    assert verbosity(None, {"CLUSTERCTL_VERBOSE": "2"}) == 2
    assert verbosity(None, {"CLUSTERCTL_VERBOSE": "yes"}) == 0
    assert verbosity(1, {"CLUSTERCTL_VERBOSE": "2"}) == 1
