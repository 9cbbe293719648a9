"""A health check's verdict: one row of ``clusterctl health`` (host, check, level, value,
and a one-line explanation). Shared by the modules that judge facts (``health``,
``isolation``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    host: str
    name: str
    level: Level
    value: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "level": self.level.value}


def ok(host: str, name: str, value: str, detail: str) -> Check:
    return Check(host, name, Level.OK, value, detail)


def warn(host: str, name: str, value: str, detail: str) -> Check:
    return Check(host, name, Level.WARN, value, detail)


def fail(host: str, name: str, value: str, detail: str) -> Check:
    return Check(host, name, Level.FAIL, value, detail)
