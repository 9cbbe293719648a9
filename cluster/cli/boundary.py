"""The command line's one exception boundary: what a user sees when something goes wrong.

- A ``ClusterError`` (a bad file, an unreachable host, a locked record...) is expected: its
  message, on one line, and its documented exit code (``cluster.errors``).
- Ctrl-C outside a job (a job reports it itself): ``interrupted``, exit 130.
- Anything else is a bug: ``error: internal: TYPE: message`` on one line and exit 70; the
  traceback follows on stderr only when the user asked for ``-v`` (or
  ``CLUSTERCTL_VERBOSE``), so a report can include it.
- ``SystemExit`` passes untouched: typer exits with each command's code, and click's usage
  errors keep their own message and exit 2.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Mapping
from typing import TextIO

from cluster.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, ClusterError

VERBOSE_ENV = "CLUSTERCTL_VERBOSE"


def one_line(text: str) -> str:
    """A message flattened onto one line (a message may quote a multi-line output)."""
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def internal_line(exc: BaseException) -> str:
    """``error: internal: TYPE: message``, the line an unexpected exception becomes."""
    message = one_line(str(exc))
    kind = type(exc).__name__
    return f"error: internal: {kind}: {message}" if message else f"error: internal: {kind}"


def verbosity(parsed: int | None, environ: Mapping[str, str]) -> int:
    """The ``-v`` count the global options callback parsed; before it ran (an error while
    the commands were being registered), ``CLUSTERCTL_VERBOSE`` as click would read it."""
    if parsed is not None:
        return parsed
    try:
        return max(0, int(environ.get(VERBOSE_ENV) or 0))
    except ValueError:
        return 0


def _expected(exc: BaseException) -> BaseException:
    """The error to report: a group of concurrent failures is reported by its first
    ClusterError or Ctrl-C (or its only member), as if it had been raised alone."""
    while isinstance(exc, BaseExceptionGroup):
        members = list(exc.exceptions)
        known = [m for m in members if isinstance(m, ClusterError | KeyboardInterrupt)]
        if known:
            exc = known[0]
        elif len(members) == 1:
            exc = members[0]
        else:
            break
    return exc


def guarded(
    main: Callable[[], object], verbose: Callable[[], int], stderr: TextIO | None = None
) -> int:
    """Run ``main`` (the whole command line) and return the exit code for what it raised;
    ``EXIT_OK`` when it returned. ``verbose`` is asked only when there is a traceback to
    show or not."""
    stream = stderr if stderr is not None else sys.stderr
    try:
        main()
    except SystemExit:
        raise
    except BaseException as raised:  # the boundary: nothing gets past as a traceback
        exc = _expected(raised)
        if isinstance(exc, KeyboardInterrupt):
            stream.write("interrupted\n")
            return EXIT_INTERRUPTED
        if isinstance(exc, ClusterError):
            stream.write(f"error: {one_line(str(exc))}\n")
            return exc.exit_code
        stream.write(internal_line(exc) + "\n")
        if verbose() >= 1:
            traceback.print_exception(raised, file=stream)
        return EXIT_INTERNAL
    return EXIT_OK
