"""When a job may run: not before a time (``--at``), and inside a daily window
(``--window 01:00-07:00``, local time; a window may cross midnight: ``23:00-05:00``).

Times are read with ``dateutil`` (``--at 2026-12-01T02:00``, ``--at 02:00`` for the next
02:00) and windows are computed with ``datetime`` in the local time zone, so the change
to or from summer time is the library's, not ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from dateutil import parser as dateparser
from dateutil import tz

_WINDOW = re.compile(r"^\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a window such as 01:00-07:00")
        try:
            start, end = (dateparser.parse(part).time() for part in match.groups())
        except (ValueError, OverflowError):
            raise ValueError(f"{text!r} is not a window such as 01:00-07:00") from None
        if start == end:
            raise ValueError(f"{text!r} is empty: start and end are the same time")
        return cls(start, end)

    def current_or_next(self, now: float) -> tuple[float, float]:
        """The window that contains ``now``, else the next one: (start, end) timestamps."""
        local = datetime.fromtimestamp(now, tz.tzlocal())
        for day in (-1, 0, 1):
            base = (local + timedelta(days=day)).date()
            start = datetime.combine(base, self.start, tz.tzlocal())
            end = datetime.combine(base, self.end, tz.tzlocal())
            if end <= start:
                end += timedelta(days=1)
            if local < end:
                return start.timestamp(), end.timestamp()
        raise AssertionError("a daily window always has a next occurrence")  # pragma: no cover

    def contains(self, now: float) -> bool:
        start, end = self.current_or_next(now)
        return start <= now < end


def parse_at(text: str, now: float) -> float:
    """``--at``: a date and time, or a time of day (its next occurrence), local time."""
    try:
        local_now = datetime.fromtimestamp(now, tz.tzlocal())
        parsed = dateparser.parse(text, default=local_now.replace(second=0, microsecond=0))
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a time such as 02:00 or 2026-12-01T02:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz.tzlocal())
    if re.fullmatch(r"\s*\d{1,2}:\d{2}\s*", text) and parsed <= local_now:
        parsed += timedelta(days=1)
    return parsed.timestamp()


def eligible(at: float | None, window: str | None, now: float) -> tuple[bool, float | None]:
    """May a job start now? And when, if not (the time to look again)."""
    if at is not None and now < at:
        return False, at
    if window is not None:
        start, _ = Window.parse(window).current_or_next(now)
        if now < start:
            return False, start
    return True, None


def window_end(window: str | None, now: float) -> float | None:
    """The end of the window a job runs in (a sweep's ``--until``), or None."""
    if window is None:
        return None
    _, end = Window.parse(window).current_or_next(now)
    return end
