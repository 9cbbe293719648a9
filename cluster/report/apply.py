"""Writing a split back into a profile, touching nothing else in the file.

``apply_split`` rewrites only the top-level ``tensor_split = ...`` line (or, for an array
written over several lines, those lines) as ``tensor_split = "1.2/0.8"``; comments, blank
lines, key order and line endings stay byte for byte, and a comment at the end of the line
is kept. It returns the new text and a unified diff, so the caller can show the change
before ``write_applied`` replaces the file atomically (a temporary file in the same
directory, then a rename: a crash leaves the old file or the new one, never half of one).
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

from cluster.config.models import format_split, parse_split
from cluster.errors import ConfigError

KEY = "tensor_split"
# A top-level assignment: the key bare or quoted at the start of a line.
_ASSIGNMENT = re.compile(
    r"""^(?P<indent>[ \t]*)(?:tensor_split|"tensor_split"|'tensor_split')[ \t]*="""
)
_TABLE = re.compile(r"^[ \t]*\[")


def apply_split(profile_path: Path, split: Sequence[float]) -> tuple[str, str]:
    """The profile's text with its split replaced, and the unified diff of the change (empty
    when the profile already has this split).

    Raises ConfigError (key ``tensor_split``) when the file cannot be read, is not valid
    TOML, has no top-level ``tensor_split`` line or several, or when the new split has a
    different number of entries than the old one.
    """
    source = str(profile_path)
    try:
        proportions = parse_split(list(split))
    except ValueError as exc:
        raise ConfigError(str(exc), file=source, key=KEY) from None
    try:
        with profile_path.open(encoding="utf-8", newline="") as handle:
            old = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=source) from None
    lines = old.splitlines(keepends=True)
    start, end = _span(lines, source)
    try:
        current = parse_split(tomllib.loads(old).get(KEY))
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(
            f"the current split cannot be read: {exc}", file=source, key=KEY
        ) from None
    if len(current) != len(proportions):
        raise ConfigError(
            f"the profile splits over {len(current)} devices ({format_split(current)}), "
            f"the new split {format_split(proportions)} has {len(proportions)} entries",
            file=source,
            key=KEY,
        )
    first, last = lines[start], lines[end - 1]
    indent = _ASSIGNMENT.match(first)
    assert indent is not None
    ending = last[len(last.rstrip("\r\n")) :]
    comment = _trailing_comment(last.rstrip("\r\n") if end - start > 1 else _value(first))
    line = f'{indent.group("indent")}{KEY} = "{format_split(proportions)}"{comment}{ending}'
    new = "".join([*lines[:start], line, *lines[end:]])
    if new == old:
        return old, ""
    diff = difflib.unified_diff(
        lines, new.splitlines(keepends=True), fromfile=source, tofile=source
    )
    return new, "".join(_terminated(diff))


def _span(lines: Sequence[str], source: str) -> tuple[int, int]:
    """The lines [start, end) of the one top-level split assignment."""
    found: list[int] = []
    for number, line in enumerate(lines):
        if _TABLE.match(line):
            break  # past the top level: keys below belong to tables
        if _ASSIGNMENT.match(line):
            found.append(number)
    if not found:
        raise ConfigError(f"no top-level `{KEY} = ...` line to rewrite", file=source, key=KEY)
    if len(found) > 1:
        where = ", ".join(str(number + 1) for number in found)
        raise ConfigError(f"several `{KEY}` lines (lines {where})", file=source, key=KEY)
    start = found[0]
    end = start + 1
    value = _value(lines[start])
    if value.lstrip().startswith("["):
        # An array may run over several lines: up to the line that closes it.
        depth = _depth(value)
        while depth > 0 and end < len(lines):
            depth += _depth(lines[end])
            end += 1
        if depth > 0:
            raise ConfigError(f"the `{KEY}` array is not closed", file=source, key=KEY)
    return start, end


def _value(line: str) -> str:
    """What follows the ``=`` of an assignment line, without its line ending."""
    return line.rstrip("\r\n").split("=", 1)[1]


def _depth(text: str) -> int:
    code = text.split("#", 1)[0]
    return code.count("[") - code.count("]")


def _trailing_comment(text: str) -> str:
    """The comment at the end of a line, with the spaces before it; a split's value has no
    '#', so the first one outside quotes starts the comment."""
    quote = ""
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            before = text[:index]
            return before[len(before.rstrip()) :] + text[index:]
    return ""


def _terminated(diff: Iterable[str]) -> list[str]:
    """Diff lines, each ending with a newline (the last line of a file may not)."""
    marker = "\n\\ No newline at end of file\n"
    return [line if line.endswith("\n") else line + marker for line in diff]


def write_applied(profile_path: Path, new_text: str) -> None:
    """Replace the profile with ``new_text`` atomically, keeping its permissions; a
    symbolic link keeps pointing where it did (its target is replaced)."""
    target = profile_path.resolve() if profile_path.is_symlink() else profile_path
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, before the rename
            "w",
            encoding="utf-8",
            newline="",
            dir=target.parent,
            prefix=f".{target.name}.",
            suffix=".tmp",
            delete=False,
        )
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", file=str(profile_path)) from None
    temporary = Path(handle.name)
    try:
        with handle:
            handle.write(new_text)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(mode)
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write: {exc.strerror}", file=str(profile_path)) from None
