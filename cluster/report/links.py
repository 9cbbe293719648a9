"""Where the loads' time went, in reports: each worker's link during a recorded load.

Every attempt that loaded records, per worker, the bytes its link carried, the load's
seconds and the link's measured capacity (``orchestration.linkstats.LinkLoad``). A report
shows the first load that became ready (the cold one, for a sweep) and the last one when it
is another (a sweep's reload with the rpc-server caches warm), one line per worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.store import Attempt


def shown_loads(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The first and the last ready attempt that recorded links (once when the same)."""
    loaded = [a for a in attempts if a.outcome == "ready" and a.links]
    if not loaded:
        return []
    return [loaded[0]] if len(loaded) == 1 else [loaded[0], loaded[-1]]


def link_lines(attempts: Sequence[Attempt]) -> list[str]:
    """Markdown setup lines: ``- link during the load of attempt 1 (12.3 s): bee: ...``."""
    lines = []
    for attempt in shown_loads(attempts):
        seconds = f", {attempt.load_seconds:.1f} s" if attempt.load_seconds is not None else ""
        for link in attempt.links:
            lines.append(f"- link during load {attempt.number}{seconds}: {link.describe()}")
    return lines
