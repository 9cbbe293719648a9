"""Prompt shapes: what a benchmark prompt is made of, at any size.

Prompt processing speed depends on what the tokens are (a repeated word batches and caches
differently from prose, code or chat), so a measurement names its shape. The built-in
names are stable; they go into records and playbooks:

    opt           the word "opt" repeated
    contexttoken  the word "contexttoken" repeated
    natural       English prose
    mixed         prose with Python, JSON, numbers and non-ASCII text (Latin, Greek, CJK, emoji)
    code          Python source
    agentic       a chat: a system prompt with tool schemas, user questions, tool calls and
                  results (tool calls as ``<tool_call>`` text, since templates drop structured
                  ones)
    random        random ids from the served model's ordinary tokens

``Shape.build(size)`` is deterministic: ``size`` is characters of generated content for
text and chat shapes (a prefix of one infinite seeded stream, so tokens grow with size,
nearly monotonically: a cut word may merge with the next), token ids for token shapes. A
calibration (``calibrate.py``) picks the size that gives a target token count. A user adds
a shape from a text file with ``TextFileShape``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from cluster.measure import corpus


class PromptKind(StrEnum):
    TEXT = "text"  # a string prompt for /completion
    CHAT = "chat"  # messages for the chat template
    TOKENS = "tokens"  # token ids for /completion


@dataclass(frozen=True)
class PromptBody:
    """One prompt as sent: text, chat messages or token ids, by ``kind``."""

    kind: PromptKind
    text: str = ""
    messages: tuple[tuple[str, str], ...] = ()  # (role, content)
    tokens: tuple[int, ...] = ()

    def with_prefix(self, prefix: str, prefix_tokens: Sequence[int] = ()) -> PromptBody:
        """This body behind a prefix, so that no two requests share a cached prompt start.

        Text: ``prefix + "\\n" + text``; chat: the same before the first message's content
        (a lone user message when there is none); tokens: ``prefix_tokens`` first. An empty
        prefix changes nothing.
        """
        if self.kind is PromptKind.TOKENS:
            return replace(self, tokens=(*prefix_tokens, *self.tokens))
        if not prefix:
            return self
        if self.kind is PromptKind.TEXT:
            return replace(self, text=f"{prefix}\n{self.text}")
        if not self.messages:
            return replace(self, messages=(("user", prefix),))
        (role, content), *rest = self.messages
        return replace(self, messages=((role, f"{prefix}\n{content}"), *rest))

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages as the chat API takes them."""
        return [{"role": role, "content": content} for role, content in self.messages]


class Shape(Protocol):
    """Builds prompt bodies of one shape; ``build`` is pure and deterministic."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> PromptKind: ...

    def build(self, size: int) -> PromptBody: ...


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"a prompt size cannot be negative: {size}")


class _Prefixes:
    """The start of an infinite text stream, kept so that growing a prompt costs no
    regeneration: ``prefix(n)`` is the first n characters."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self._parts: list[str] = []
        self._text = ""

    def prefix(self, size: int) -> str:
        if size > len(self._text):
            # Grow geometrically so that a calibration's probes join the text a few times.
            want, have = max(size, 2 * len(self._text)), len(self._text)
            while have < want:
                chunk = next(self._chunks)
                self._parts.append(chunk)
                have += len(chunk)
            self._text = "".join(self._parts)
        return self._text[:size]


class TextStreamShape:
    """A text shape: the first ``size`` characters of a stream (a fresh one per shape)."""

    kind = PromptKind.TEXT

    def __init__(self, name: str, stream: Callable[[], Iterator[str]]) -> None:
        self.name = name
        self._prefixes = _Prefixes(stream())

    def build(self, size: int) -> PromptBody:
        _check_size(size)
        return PromptBody(PromptKind.TEXT, text=self._prefixes.prefix(size))


class TextFileShape(TextStreamShape):
    """A shape from a user's text file: its text, repeated as far as needed."""

    def __init__(self, name: str, path: Path) -> None:
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ValueError(f"shape {name!r}: text file {path} does not exist") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"shape {name!r}: {path} is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise ValueError(f"shape {name!r}: cannot read {path}: {exc.strerror}") from None
        if not text.strip():
            raise ValueError(f"shape {name!r}: text file {path} is empty")
        # Repetitions must not run words together.
        piece = text if text[-1].isspace() else text + "\n"
        super().__init__(name, lambda: itertools.repeat(piece))
        self.path = path


class ChatStreamShape:
    """A chat shape: turns of a stream until their contents hold ``size`` characters, the
    last one cut to fit."""

    kind = PromptKind.CHAT

    def __init__(self, name: str, turns: Callable[[], Iterator[tuple[str, str]]]) -> None:
        self.name = name
        self._turns = turns()
        self._seen: list[tuple[str, str]] = []

    def build(self, size: int) -> PromptBody:
        _check_size(size)
        messages: list[tuple[str, str]] = []
        left = size
        for index in itertools.count():
            if left <= 0:
                break
            if index == len(self._seen):
                self._seen.append(next(self._turns))
            role, content = self._seen[index]
            messages.append((role, content[:left]))
            left -= len(content)
        return PromptBody(PromptKind.CHAT, messages=tuple(messages))


class RandomTokensShape:
    """``size`` token ids drawn from ``pool`` (ordinary tokens of the served model), seeded:
    a longer body extends a shorter one."""

    name = "random"
    kind = PromptKind.TOKENS

    def __init__(self, pool: Sequence[int], seed: int = 0) -> None:
        if not pool:
            raise ValueError("the random shape needs a non-empty pool of token ids")
        self.pool = tuple(pool)
        self.seed = seed
        self._ids = iter(self._draw())
        self._drawn: list[int] = []

    def _draw(self) -> Iterator[int]:
        rng = corpus.Rng(self.seed)
        while True:
            yield rng.pick(self.pool)

    def build(self, size: int) -> PromptBody:
        _check_size(size)
        while len(self._drawn) < size:
            self._drawn.append(next(self._ids))
        return PromptBody(PromptKind.TOKENS, tokens=tuple(self._drawn[:size]))


_SEED = 0
_BUILTIN_TEXT: dict[str, Callable[[], Iterator[str]]] = {
    "opt": lambda: itertools.repeat("opt "),
    "contexttoken": lambda: itertools.repeat("contexttoken "),
    "natural": lambda: corpus.prose(_SEED),
    "mixed": lambda: corpus.mixed(_SEED),
    "code": lambda: corpus.code(_SEED),
}
BUILTIN_SHAPE_NAMES: tuple[str, ...] = (*_BUILTIN_TEXT, "agentic", "random")


def get_shape(
    name: str,
    files: Mapping[str, Path] | None = None,
    token_pool: Sequence[int] | None = None,
) -> Shape:
    """The shape called ``name``: a built-in one, or one of ``files`` (name to text file).

    Each call gives a fresh shape. ``random`` needs ``token_pool`` (see
    ``calibrate.ServerTokenizer.token_pool``).
    """
    files = files or {}
    clashes = sorted(set(files) & set(BUILTIN_SHAPE_NAMES))
    if clashes:
        raise ValueError(f"text file shapes cannot reuse built-in names: {', '.join(clashes)}")
    if name in _BUILTIN_TEXT:
        return TextStreamShape(name, _BUILTIN_TEXT[name])
    if name == "agentic":
        return ChatStreamShape(name, lambda: corpus.agentic_turns(_SEED))
    if name == "random":
        if token_pool is None:
            raise ValueError("the random shape needs the served model's token pool")
        return RandomTokensShape(token_pool, seed=_SEED)
    if name in files:
        return TextFileShape(name, files[name])
    known = ", ".join((*BUILTIN_SHAPE_NAMES, *sorted(files)))
    raise ValueError(f"unknown shape {name!r}; known: {known}")
