"""Token-count calibration: the shape size whose prompt is a target number of tokens.

A measurement at "4096 tokens" must send 4096 tokens as the served model counts them, and
tokenizers differ by model, so the count comes from the server itself (``ServerTokenizer``:
``/tokenize``, and ``/apply-template`` for chats). ``calibrate`` searches the shape's size
until the count is well within ``tolerance(target)`` (a quarter of it): one probe at size
0 measures the fixed overhead (prefix, chat template, BOS), a probe at a guessed size the
rate, then secant steps inside a bracket, falling back to bisection. Counts only nearly
grow with size (a cut word may merge with the next), so the bracket keeps the search
finite and ``max_probes`` bounds it; the closest size found is returned and callers check
``within_tolerance``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cluster.llamacpp.client import LlamaClient
from cluster.measure import corpus
from cluster.measure.shapes import PromptBody, PromptKind, Shape

# Characters per token assumed for the first sized probe (English BPE is near four).
GUESS_UNITS_PER_TOKEN = 4
# No text shape needs more characters per token; this bounds a search on a strange count.
MAX_UNITS_PER_TOKEN = 32
# The text the token pool is drawn from: a fixed start of the mixed corpus.
POOL_CHARS = 32_000


class Tokenizer(Protocol):
    async def count(self, body: PromptBody) -> int:
        """The exact number of tokens the server evaluates for ``body``."""
        ...

    async def token_pool(self) -> list[int]:
        """Ordinary (non-control) token ids of the served model, sorted."""
        ...


class ServerTokenizer:
    """The served model's own count, from llama-server.

    Text is tokenized with special tokens (BOS) as /completion does; a chat is first put
    through the model's template (with the generation prompt, as /v1/chat/completions
    does). Token ids are counted as they are: measured on both llama.cpp builds, a
    /completion whose prompt is a list of ids evaluates exactly those ids, with no BOS
    added (``prompt_n`` of ``[626, 628]`` is 2, of ``"hello world"`` is 3).
    """

    def __init__(self, client: LlamaClient) -> None:
        self.client = client

    async def render(self, body: PromptBody) -> str | list[int]:
        """The prompt /completion gets for a body: its ids, its text, or the chat through
        the model's template."""
        if body.kind is PromptKind.TOKENS:
            return list(body.tokens)
        if body.kind is PromptKind.CHAT:
            return await self.client.apply_template(body.chat_messages())
        return body.text

    async def count_prompt(self, prompt: str | list[int]) -> int:
        """Tokens the server evaluates for a rendered prompt."""
        if isinstance(prompt, list):
            return len(prompt)
        return len(await self.client.tokenize(prompt, add_special=True))

    async def count(self, body: PromptBody) -> int:
        return await self.count_prompt(await self.render(body))

    async def token_pool(self) -> list[int]:
        text = "".join(itertools.islice(corpus.mixed(0), 400))[:POOL_CHARS]
        return sorted(set(await self.client.tokenize(text, add_special=False)))


def tolerance(target: int) -> int:
    """How far a calibrated count may miss: 0.5% of the target, at least 16 tokens."""
    return max(16, target * 5 // 1000)


@dataclass(frozen=True)
class CalibratedPrompt:
    """The calibration's result: ``body`` (without prefix) is ``shape`` at ``size``; with a
    prefix like the sample one it counts ``tokens``."""

    shape: str
    target: int
    size: int
    tokens: int
    body: PromptBody
    probes: int

    @property
    def error(self) -> int:
        return self.tokens - self.target

    @property
    def within_tolerance(self) -> bool:
        return abs(self.error) <= tolerance(self.target)


class _Search:
    """The counts probed so far, by size; the closest one is the result."""

    def __init__(
        self, shape: Shape, tokenizer: Tokenizer, prefix: str, prefix_tokens: Sequence[int]
    ) -> None:
        self.shape, self.tokenizer = shape, tokenizer
        self.prefix, self.prefix_tokens = prefix, prefix_tokens
        self.counts: dict[int, int] = {}

    async def count(self, size: int) -> int:
        if size not in self.counts:
            body = self.shape.build(size).with_prefix(self.prefix, self.prefix_tokens)
            self.counts[size] = await self.tokenizer.count(body)
        return self.counts[size]

    def result(self, target: int) -> CalibratedPrompt:
        size = min(self.counts, key=lambda s: (abs(self.counts[s] - target), -s))
        return CalibratedPrompt(
            shape=self.shape.name,
            target=target,
            size=size,
            tokens=self.counts[size],
            body=self.shape.build(size),
            probes=len(self.counts),
        )


async def calibrate(
    shape: Shape,
    target: int,
    tokenizer: Tokenizer,
    *,
    prefix: str = "",
    prefix_tokens: Sequence[int] = (),
    max_probes: int = 24,
) -> CalibratedPrompt:
    """The size of ``shape`` whose body, behind ``prefix`` (an example of the per-request
    unique prefix), counts ``target`` tokens within ``tolerance(target)``, or the closest
    size found in ``max_probes`` tokenizer calls.

    Raises ValueError when the target is below the fixed overhead alone (the prefix, the
    chat template, BOS).
    """
    if target < 1:
        raise ValueError(f"a target token count must be positive, not {target}")
    if max_probes < 2:
        raise ValueError(f"calibration needs at least 2 probes, not {max_probes}")
    search = _Search(shape, tokenizer, prefix, prefix_tokens)
    if shape.kind is PromptKind.TOKENS:
        await _calibrate_tokens(search, target)
    else:
        await _calibrate_size(search, target, max_probes)
    return search.result(target)


def _below_overhead(target: int, overhead: int) -> ValueError:
    return ValueError(
        f"target {target} tokens is below the overhead of {overhead} tokens that the prefix "
        "and template (and BOS) take with no content at all"
    )


async def _calibrate_tokens(search: _Search, target: int) -> None:
    """Token shapes add one token per unit: one probe measures the overhead (the prefix ids,
    and BOS if the tokenizer counts one), a second corrects by it if needed."""
    size = target - len(search.prefix_tokens)
    if size < 0:
        raise _below_overhead(target, len(search.prefix_tokens))
    overhead = await search.count(size) - size
    if overhead > target:
        raise _below_overhead(target, overhead)
    if overhead != len(search.prefix_tokens):
        await search.count(target - overhead)


async def _calibrate_size(search: _Search, target: int, max_probes: int) -> None:
    """Secant steps on size inside a bracket, count(low) < target < count(high), with
    bisection when the secant leaves the bracket or one end moved twice in a row (a secant
    that creeps along a curve)."""
    # Aim inside the tolerance, so that a per-request prefix a token or two longer than the
    # sample one still lands within it; probes are cheap next to the request measured.
    aim = tolerance(target) // 4
    overhead = await search.count(0)
    if overhead > target:
        raise _below_overhead(target, overhead)
    limit = MAX_UNITS_PER_TOKEN * target + 1024
    low, high = 0, None
    high_moved: list[bool] = []
    while len(search.counts) < max_probes:
        if high is None:
            if low >= limit:
                return
            size = min(_extrapolate(search, low, target, overhead), limit)
        elif high - low <= 1:
            return  # no size in between: the closer of the two is the answer
        else:
            size = _interpolate(search, low, high, target)
            creeping = len(high_moved) >= 2 and high_moved[-1] == high_moved[-2]
            if creeping or not low < size < high:
                size = (low + high) // 2
        tokens = await search.count(size)
        if abs(tokens - target) <= aim:
            return
        if tokens < target:
            low = size
        else:
            high = size
        high_moved.append(tokens > target)


def _extrapolate(search: _Search, low: int, target: int, overhead: int) -> int:
    """A size past ``low`` (still short of the target): by the rate measured from size 0 to
    ``low``, or by the guess before there is one; at most 16 times further."""
    low_tokens = search.counts[low]
    grown = low_tokens - overhead
    per_unit = grown / low if low and grown > 0 else 1 / GUESS_UNITS_PER_TOKEN
    step = max(round((target - low_tokens) / per_unit), 1)
    return low + (min(step, 16 * low) if low else step)


def _interpolate(search: _Search, low: int, high: int, target: int) -> int:
    low_tokens, high_tokens = search.counts[low], search.counts[high]
    return low + round((target - low_tokens) * (high - low) / (high_tokens - low_tokens))
