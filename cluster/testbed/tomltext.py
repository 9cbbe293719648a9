"""TOML text for the inventories and profiles the testbed and the benchmarks write."""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path

from cluster.testbed.network import TestbedError


def toml_key(key: str) -> str:
    """A TOML key: bare when it can be, else a quoted string."""
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else toml_string(key)


def toml_string(text: str) -> str:
    """A TOML basic string, escaping what TOML requires (quote, backslash, controls)."""
    named = {'"': '"', "\\": "\\", "\b": "b", "\t": "t", "\n": "n", "\f": "f", "\r": "r"}
    out = []
    for ch in text:
        if ch in named:
            out.append("\\" + named[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    """One TOML value from a Python str, Path, address, bool, int, float, list or dict."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path | ipaddress.IPv4Address):
        return toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TestbedError(f"cannot write {type(value).__name__} {value!r} as TOML")
