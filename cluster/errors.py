"""The one error tree of clusterctl.

Every failure a user can meet is one of these, so the CLI can print one clear line and
exit with the documented code, and retries (tenacity) can target our own types::

    ClusterError                      base; ``exit_code`` says how the CLI exits
    ├── ConfigError                   a file, key or value is wrong (exit 2)
    ├── TransportError                a host could not be reached or talked to (exit 3)
    │   └── HostKeyError              the host key is unknown or changed (exit 3)
    ├── RemoteCommandError            a command ran and failed on a host (exit 4)
    ├── LaunchError                   the cluster did not come up after all retries (exit 5)
    ├── HTTPError                     llama-server did not answer as expected (exit 6)
    ├── StoreError                    the record (state directory, SQLite) is unusable (exit 7)
    └── ClusterBusy                   another controller holds the cluster's lease (exit 8)

Third-party exceptions (asyncssh, OSError, httpx, sqlite3) are mapped to these at the
boundary where they are raised (``raise Mapped(msg) from exc``), never further up.
Anything else that reaches the command line's entry point is a bug: it is reported on
one line as ``error: internal: TYPE: message`` with ``EXIT_INTERNAL`` (the traceback
only with ``-v``).
"""

from __future__ import annotations

# The documented exit codes of the CLI (docs/cli.md); tests pin them.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_CONFIG = 2
EXIT_TRANSPORT = 3
EXIT_REMOTE = 4
EXIT_LAUNCH = 5
EXIT_HTTP = 6
EXIT_STORE = 7
EXIT_BUSY = 8
# An exception that is not a ClusterError: a bug (sysexits.h's EX_SOFTWARE).
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class ClusterError(Exception):
    """Base of every error clusterctl raises on purpose."""

    exit_code = EXIT_CHECK_FAILED


class ConfigError(ClusterError):
    """A configuration file, key or value is wrong; the message names all three."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.key = key


class TransportError(ClusterError):
    """A host could not be reached, or the connection broke."""

    exit_code = EXIT_TRANSPORT

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host


class HostKeyError(TransportError):
    """The host key was not in known_hosts or did not match it."""


class RemoteCommandError(ClusterError):
    """A command ran on a host and exited non-zero; carries its result fields."""

    exit_code = EXIT_REMOTE

    def __init__(self, host: str, argv: list[str], exit_status: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output on stderr"
        super().__init__(f"{host}: {argv[0]} exited with {exit_status}: {tail}")
        self.host = host
        self.argv = argv
        self.exit_status = exit_status
        self.stderr = stderr


class LaunchError(ClusterError):
    """The cluster did not reach serving within the profile's retries."""

    exit_code = EXIT_LAUNCH


class HTTPError(ClusterError):
    """llama-server could not be reached over HTTP or answered with an error."""

    exit_code = EXIT_HTTP


class StoreError(ClusterError):
    """The record cannot be used: the state directory cannot be created or written, the
    database is locked by another process past the busy timeout, or it is not a database.
    The message names the directory or the database file."""

    exit_code = EXIT_STORE

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class ClusterBusy(ClusterError):
    """Another controller holds the cluster's lease (``orchestration.lease``): the message
    names the holder (host, pid, command, since)."""

    exit_code = EXIT_BUSY
