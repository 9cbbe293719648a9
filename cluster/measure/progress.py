"""How a measurement job tells its user where it is, without knowing about terminals.

Jobs call ``begin`` with the number of steps they expect (requests, cases or probes) and
how many of them are already done (a resumed job's recorded points),
``describe`` when one starts, ``advance`` after each, and ``say`` for a line worth reading
later. The CLI implements it with rich progress bars (with an ETA) on stderr.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def begin(self, total: int | None, what: str, done: int = 0) -> None: ...

    def advance(self, what: str | None = None) -> None: ...

    def describe(self, what: str) -> None: ...

    def say(self, message: str) -> None: ...
