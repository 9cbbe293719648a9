"""Prompt shapes: deterministic, growing with size, made of what their names promise."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from cluster.measure.shapes import (
    BUILTIN_SHAPE_NAMES,
    PromptBody,
    PromptKind,
    RandomTokensShape,
    Shape,
    TextFileShape,
    get_shape,
)

POOL = list(range(3, 515))
SIZES = [0, 1, 7, 100, 1000, 5000, 20000]


def shape(name: str) -> Shape:
    return get_shape(name, token_pool=POOL)


def content(body: PromptBody) -> str:
    return body.text + "".join(text for _, text in body.messages)


def units(body: PromptBody) -> int:
    return len(body.tokens) if body.kind is PromptKind.TOKENS else len(content(body))


def test_the_builtin_names_are_stable() -> None:
    assert BUILTIN_SHAPE_NAMES == (
        "opt",
        "contexttoken",
        "natural",
        "mixed",
        "code",
        "agentic",
        "random",
    )


@pytest.mark.parametrize("name", BUILTIN_SHAPE_NAMES)
def test_builds_are_deterministic(name: str) -> None:
    first, second = shape(name), shape(name)
    # Out of order on one shape, in order on a fresh one: the same bodies.
    assert [first.build(n) for n in reversed(SIZES)][::-1] == [second.build(n) for n in SIZES]
    assert first.name == name


@pytest.mark.parametrize("name", BUILTIN_SHAPE_NAMES)
def test_bodies_grow_with_size_and_extend_the_smaller(name: str) -> None:
    built = shape(name)
    bodies = [built.build(n) for n in SIZES]
    assert [units(body) for body in bodies] == SIZES
    assert all(body.kind is built.kind for body in bodies)
    for small, large in itertools.pairwise(bodies):
        if built.kind is PromptKind.TOKENS:
            assert large.tokens[: len(small.tokens)] == small.tokens
        else:
            assert content(large).startswith(content(small))


def test_kinds() -> None:
    kinds = {name: shape(name).kind for name in BUILTIN_SHAPE_NAMES}
    assert kinds["agentic"] is PromptKind.CHAT
    assert kinds["random"] is PromptKind.TOKENS
    assert {kinds[n] for n in ("opt", "contexttoken", "natural", "mixed", "code")} == {
        PromptKind.TEXT
    }


def test_repeated_word_shapes() -> None:
    assert shape("opt").build(11).text == "opt opt opt"
    words = shape("contexttoken").build(5000).text.split()
    assert set(words[:-1]) == {"contexttoken"}
    assert "contexttoken".startswith(words[-1])  # the cut at the end


def test_natural_is_prose() -> None:
    text = shape("natural").build(5000).text
    assert text.isascii()
    sentences = re.findall(r"[A-Z\"][^.?!]*[.?!]", text)
    assert len(sentences) > 30
    assert len(set(sentences)) > 0.9 * len(sentences)  # not one sentence repeated
    assert "\n\n" in text  # paragraphs


def scripts(text: str) -> set[str]:
    """Which kinds of non-ASCII text occur."""
    found = set()
    for c in text:
        if "\u00c0" <= c <= "\u024f":
            found.add("accented latin")
        elif "\u0370" <= c <= "\u03ff":
            found.add("greek")
        elif "\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af":
            found.add("cjk")
        elif ord(c) >= 0x1F300:
            found.add("emoji")
    return found


def test_mixed_has_every_ingredient() -> None:
    text = shape("mixed").build(5000).text
    assert {"cjk", "emoji"} <= scripts(text)
    assert scripts(shape("mixed").build(40000).text) == {"accented latin", "greek", "cjk", "emoji"}
    objects = re.findall(r"```json\n(.*?)\n```", text, re.S)
    assert objects
    assert isinstance(json.loads(objects[0]), dict)
    assert re.search(r"\d+\.\d+", text)
    code = re.findall(r"```python\n(.*?)```", text, re.S)
    assert code
    assert re.search(r"^(async def|def|class) \w+", code[0], re.M)
    compile(code[0], "<mixed>", "exec")  # real Python


def test_code_is_python() -> None:
    text = shape("code").build(20000).text
    assert text.count("def ") > 10
    # The whole prefix up to the last complete block compiles.
    complete = text[: text.rindex("\n\n\n")]
    compile(complete, "<code>", "exec")


def test_agentic_is_a_tool_using_chat() -> None:
    body = shape("agentic").build(20000)
    roles = [role for role, _ in body.messages]
    assert roles[0] == "system"
    assert set(roles[1:]) == {"user", "assistant", "tool"}
    system = body.messages[0][1]
    tools = re.search(r"<tools>\n(.*?)\n</tools>", system, re.S)
    assert tools
    schemas = [json.loads(line) for line in tools.group(1).splitlines()]
    assert len(schemas) >= 3
    assert all(s["function"]["parameters"]["type"] == "object" for s in schemas)
    names = {s["function"]["name"] for s in schemas}
    calls = 0
    for index, (role, text) in enumerate(body.messages[1:-1], start=1):
        if role == "tool":
            previous_role, previous = body.messages[index - 1]
            assert previous_role == "assistant"
            call = re.search(r"<tool_call>(.*)</tool_call>", previous)
            assert call
            assert json.loads(call.group(1))["name"] in names
            assert isinstance(json.loads(text), dict)
            calls += 1
        if role == "user":
            assert body.messages[index - 1][0] in ("system", "assistant")
            assert body.messages[index + 1][0] == "assistant"
    assert calls >= 5


def test_random_draws_from_the_pool() -> None:
    tokens = shape("random").build(5000).tokens
    assert set(tokens) <= set(POOL)
    assert len(set(tokens)) > 400
    assert RandomTokensShape(POOL, seed=1).build(50) != RandomTokensShape(POOL).build(50)
    with pytest.raises(ValueError, match="pool"):
        RandomTokensShape([])


@pytest.mark.parametrize("name", BUILTIN_SHAPE_NAMES)
def test_negative_size_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        shape(name).build(-1)


def test_with_prefix_text() -> None:
    body = PromptBody(PromptKind.TEXT, text="hello")
    assert body.with_prefix("[r1]", [1, 2]).text == "[r1]\nhello"
    assert body.with_prefix("") == body


def test_with_prefix_chat_goes_into_the_first_message() -> None:
    body = PromptBody(PromptKind.CHAT, messages=(("system", "be brief"), ("user", "hi")))
    prefixed = body.with_prefix("[r1]")
    assert prefixed.messages == (("system", "[r1]\nbe brief"), ("user", "hi"))
    assert prefixed.chat_messages()[0] == {"role": "system", "content": "[r1]\nbe brief"}
    empty = PromptBody(PromptKind.CHAT)
    assert empty.with_prefix("[r1]").messages == (("user", "[r1]"),)


def test_with_prefix_tokens() -> None:
    body = PromptBody(PromptKind.TOKENS, tokens=(5, 6))
    assert body.with_prefix("[r1]", [1, 2]).tokens == (1, 2, 5, 6)
    assert body.with_prefix("[r1]").tokens == (5, 6)


def test_text_file_shape(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("Ünïcode line", encoding="utf-8")
    built = TextFileShape("mine", path)
    assert built.kind is PromptKind.TEXT
    assert built.build(29).text == "Ünïcode line\nÜnïcode line\nÜnï"
    assert get_shape("mine", {"mine": path}).build(12).text == "Ünïcode line"
    path.write_text("ends in a newline\n")
    assert TextFileShape("mine", path).build(36).text == "ends in a newline\n" * 2


def test_text_file_shape_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(ValueError, match=f"shape 'mine': text file {missing} does not exist"):
        TextFileShape("mine", missing)
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        TextFileShape("mine", empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{latin1} is not UTF-8"):
        TextFileShape("mine", latin1)
    with pytest.raises(ValueError, match="cannot read"):
        TextFileShape("mine", tmp_path)  # a directory


def test_unknown_shape() -> None:
    with pytest.raises(
        ValueError, match=r"unknown shape 'prose'; known: opt, contexttoken, .*mine"
    ):
        get_shape("prose", {"mine": Path("mine.txt")})


def test_random_needs_the_pool() -> None:
    with pytest.raises(ValueError, match="token pool"):
        get_shape("random")


def test_file_shapes_cannot_shadow_builtins(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="natural"):
        get_shape("opt", {"natural": tmp_path / "x.txt"})
