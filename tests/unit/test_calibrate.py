"""Calibration against in-process tokenizers with known rules.

``WordTokenizer`` counts like a plausible BPE (short words one token, long ones a token per
four characters, non-ASCII characters two each, BOS first, a per-message template cost), so
every built-in shape must reach every target within tolerance in few probes. The broken
tokenizers check that the search ends, with an honest best, when no size hits the target.
The real server's tokenizer is exercised by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import pytest

from cluster.measure.calibrate import CalibratedPrompt, calibrate, tolerance
from cluster.measure.shapes import (
    BUILTIN_SHAPE_NAMES,
    PromptBody,
    PromptKind,
    RandomTokensShape,
    TextStreamShape,
    get_shape,
)

POOL = list(range(100, 1100))
TARGETS = [64, 500, 4096, 45000, 100000]
PREFIX = "[r0 c0000 q00 00000000]"
PREFIX_TOKENS = [7, 8, 9, 10, 11, 12, 13, 14]


def word_tokens(text: str) -> int:
    total = 0
    for word in text.split():
        ascii_part = "".join(c for c in word if c.isascii())
        total += 2 * (len(word) - len(ascii_part))
        if ascii_part:
            total += 1 if len(ascii_part) <= 4 else math.ceil(len(ascii_part) / 4)
    return total


class WordTokenizer:
    """Words on whitespace, ceil(len/4) tokens each (one if short), non-ASCII two each,
    +1 BOS; a chat costs ``per_message`` template tokens a message plus 3 for the
    generation prompt; token ids are counted with a BOS."""

    def __init__(self, per_message: int = 5) -> None:
        self.per_message = per_message
        self.calls = 0

    def tokens(self, body: PromptBody) -> int:
        if body.kind is PromptKind.TOKENS:
            return len(body.tokens) + 1
        if body.kind is PromptKind.CHAT:
            contents = sum(word_tokens(content) for _, content in body.messages)
            return 1 + contents + self.per_message * len(body.messages) + 3
        return 1 + word_tokens(body.text)

    async def count(self, body: PromptBody) -> int:
        self.calls += 1
        return self.tokens(body)

    async def token_pool(self) -> list[int]:
        return POOL


class RuleTokenizer(WordTokenizer):
    """Counts text by an arbitrary rule on its length."""

    def __init__(self, rule: Callable[[int], int]) -> None:
        super().__init__()
        self.rule = rule
        self.seen: list[int] = []

    def tokens(self, body: PromptBody) -> int:
        return self.rule(len(body.text))

    async def count(self, body: PromptBody) -> int:
        self.seen.append(await super().count(body))
        return self.seen[-1]


def run(
    shape_name: str,
    target: int,
    tokenizer: WordTokenizer,
    *,
    prefix: str = PREFIX,
    prefix_tokens: Sequence[int] = PREFIX_TOKENS,
    max_probes: int = 24,
) -> CalibratedPrompt:
    shape = get_shape(shape_name, token_pool=POOL)
    return asyncio.run(
        calibrate(
            shape,
            target,
            tokenizer,
            prefix=prefix,
            prefix_tokens=prefix_tokens,
            max_probes=max_probes,
        )
    )


def test_tolerance_is_half_a_percent_or_16_tokens() -> None:
    assert tolerance(1) == 16
    assert tolerance(3200) == 16
    assert tolerance(3399) == 16
    assert tolerance(3400) == 17
    assert tolerance(4096) == 20
    assert tolerance(100000) == 500


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape_name", BUILTIN_SHAPE_NAMES)
def test_every_builtin_shape_reaches_every_target(shape_name: str, target: int) -> None:
    tokenizer = WordTokenizer()
    prompt = run(shape_name, target, tokenizer)
    assert prompt.within_tolerance, prompt.error
    assert abs(prompt.error) <= tolerance(target)
    assert prompt.shape == shape_name
    assert prompt.target == target
    assert prompt.probes == tokenizer.calls
    assert prompt.probes <= (2 if shape_name == "random" else 16)
    # The count is of the body behind a prefix like the sample; the body itself has none.
    prefixed = prompt.body.with_prefix(PREFIX, PREFIX_TOKENS)
    assert tokenizer.tokens(prefixed) == prompt.tokens
    assert prompt.body == get_shape(shape_name, token_pool=POOL).build(prompt.size)
    assert PREFIX not in repr(prompt.body)


def test_token_shapes_need_no_search() -> None:
    tokenizer = WordTokenizer()
    prompt = run("random", 1000, tokenizer)
    # The fake counts a BOS: 1000 = BOS + 8 prefix ids + 991 drawn ids, exactly.
    assert (prompt.size, prompt.tokens, prompt.error) == (991, 1000, 0)
    assert prompt.probes == 2
    assert len(prompt.body.tokens) == 991


def test_token_shapes_without_bos_take_one_probe() -> None:
    class NoBos(WordTokenizer):
        def tokens(self, body: PromptBody) -> int:
            return len(body.tokens)

    prompt = run("random", 1000, NoBos())
    assert (prompt.size, prompt.tokens, prompt.probes) == (992, 1000, 1)


def test_the_prefix_is_counted() -> None:
    bare = run("natural", 4096, WordTokenizer(), prefix="", prefix_tokens=())
    long_prefix = "x" * 4000  # 1000 tokens by the fake's rule
    prefixed = run("natural", 4096, WordTokenizer(), prefix=long_prefix)
    assert bare.within_tolerance and prefixed.within_tolerance
    assert bare.size - prefixed.size > 3000


def test_a_target_below_the_overhead_is_refused() -> None:
    with pytest.raises(ValueError, match="overhead of 1001 tokens"):
        run("natural", 500, WordTokenizer(), prefix="x" * 4000)
    with pytest.raises(ValueError, match="overhead"):
        run("agentic", 8, WordTokenizer(per_message=20))
    with pytest.raises(ValueError, match="overhead"):
        run("random", 4, WordTokenizer())
    with pytest.raises(ValueError, match="positive"):
        run("opt", 0, WordTokenizer())


def test_a_step_count_that_cannot_hit_the_target_ends_with_the_closest() -> None:
    # 100 tokens for every 37 characters: 1001 and 1101 are possible, 1050 is not.
    tokenizer = RuleTokenizer(lambda chars: 1 + 100 * (chars // 37))
    prompt = run("natural", 1050, tokenizer)
    assert not prompt.within_tolerance
    assert abs(prompt.error) == 49
    assert prompt.probes <= 24


@pytest.mark.parametrize("target", [64, 4096, 100000])
def test_a_jittery_count_still_ends(target: int) -> None:
    # Up to 40 tokens up or down from one size to the next: not monotone at all.
    tokenizer = RuleTokenizer(lambda chars: chars // 4 + (chars * 7919) % 81 - 40)
    prompt = run("natural", target, tokenizer, max_probes=20)
    assert prompt.probes == tokenizer.calls <= 20
    # The answer is the closest count probed, and it is what the tokenizer says of it.
    assert abs(prompt.error) == min(abs(seen - target) for seen in tokenizer.seen)
    assert tokenizer.tokens(prompt.body.with_prefix(PREFIX)) == prompt.tokens


def test_a_count_that_never_grows_ends_within_the_size_limit() -> None:
    tokenizer = RuleTokenizer(lambda chars: 5)
    prompt = run("opt", 4096, tokenizer, max_probes=24)
    assert prompt.error == 5 - 4096
    assert prompt.probes <= 24
    assert prompt.size <= 32 * 4096 + 1024


def test_max_probes_is_respected() -> None:
    tokenizer = RuleTokenizer(lambda chars: 1 + 100 * (chars // 37))
    prompt = run("natural", 1050, tokenizer, max_probes=3)
    assert prompt.probes == tokenizer.calls == 3


def test_a_text_file_style_shape_with_dense_tokens_calibrates() -> None:
    # Non-ASCII only: two tokens a character, eight times denser than the first guess.
    shape = TextStreamShape("dense", lambda: iter(lambda: "ΘΘΘΘ ", None))
    tokenizer = WordTokenizer()
    prompt = asyncio.run(calibrate(shape, 45000, tokenizer))
    assert prompt.within_tolerance
    assert prompt.probes <= 8


def test_custom_random_pool_and_seed() -> None:
    shape = RandomTokensShape([5, 6, 7], seed=3)
    prompt = asyncio.run(calibrate(shape, 100, WordTokenizer()))
    assert prompt.tokens == 100
    assert set(prompt.body.tokens) <= {5, 6, 7}
