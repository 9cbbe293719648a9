"""Generated text for the prompt shapes: prose, Python code, JSON, numbers, other scripts,
and agent conversations.

Everything is made here by seeded generators from small word lists written for this
project: nothing is downloaded or quoted, so no one's text ends up in a record, and the
same seed gives the same text on every host. Each public function returns an infinite
iterator; a shape takes a prefix of it, so a longer prompt always extends a shorter one.

Only ``random.Random.random()`` is drawn from: Python guarantees its sequence for a seed
across versions (``choice`` and ``randrange`` carry no such promise), and a shape's text
must not change when a host upgrades Python.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class Rng:
    """The few draws the generators need, all made from ``random()``."""

    def __init__(self, seed: int) -> None:
        # Not for secrets: a fixed seed is the point.
        self._random = random.Random(seed)  # noqa: S311

    def below(self, n: int) -> int:
        return min(int(self._random.random() * n), n - 1)

    def pick(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def between(self, low: int, high: int) -> int:
        return low + self.below(high - low + 1)

    def chance(self, p: float) -> bool:
        return self._random.random() < p

    def real(self, high: float) -> float:
        return self._random.random() * high


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


# --- prose ---------------------------------------------------------------------------------

# Each topic: nouns, verbs (present, third person), verbs (past), adjectives, places.
_TOPICS = tuple(
    tuple(_words(part, "|") for part in topic)
    for topic in (
        (
            "server|node|rack|scheduler|job queue|replica|shard|checkpoint|driver|daemon",
            "restarts|drains|replicates|recovers|throttles|reports back|stalls|wakes up",
            "restarted|drained|replicated|recovered|throttled|reported back|stalled|woke up",
            "idle|busy|degraded|healthy|overloaded|redundant|stale|quiet|noisy",
            "in the second rack|on the head node|in the staging cluster|behind the old firewall",
        ),
        (
            "switch|cable|router|link|port|tunnel|subnet|gateway|bridge|interface",
            "forwards traffic|drops packets|negotiates a lower speed|floods the segment|flaps",
            "forwarded traffic|dropped packets|negotiated a lower speed|flooded the segment",
            "saturated|lossy|asymmetric|congested|direct|misconfigured|reliable",
            "between the two buildings|across the backbone|inside the lab|at the patch panel",
        ),
        (
            "soup|bread|sauce|oven|pan|recipe|dough|broth|garlic|lemon tart|kitchen",
            "simmers|rises|thickens|burns|cools|ferments|turns crisp|softens",
            "simmered|rose|thickened|burned|cooled|fermented|turned crisp|softened",
            "golden|bitter|fragrant|crusty|tender|smoky|sweet|salty",
            "on the back burner|in the cast iron pan|at the farmers market|under a clean towel",
        ),
        (
            "train|ferry|ticket|passport|station|harbor|map|suitcase|village|mountain road",
            "departs late|arrives early|crosses the valley|winds uphill|waits|stops briefly",
            "departed late|arrived early|crossed the valley|wound uphill|waited|stopped",
            "crowded|scenic|remote|narrow|quiet|expensive|forgotten",
            "along the coast|through the mountain pass|near the old harbor|on the night train",
        ),
        (
            "empire|treaty|archive|manuscript|council|fortress|merchant guild|dynasty|census",
            "records the famine|describes the war|survives|collapses|expands|trades salt",
            "recorded the famine|described the war|survived|collapsed|expanded|traded salt",
            "ancient|disputed|fragile|famous|rival|wealthy|obscure",
            "in the northern provinces|along the trade routes|in the archive|beyond the river",
        ),
        (
            "telescope|comet|star|orbit|planet|moon|nebula|eclipse|observatory|lens",
            "rises|fades|shines|drifts|wobbles|vanishes behind the hills",
            "rose|faded|shone|drifted|wobbled|vanished behind the hills",
            "faint|distant|bright|elliptical|cold|unexpected",
            "above the horizon|in the southern sky|through thin clouds|at the observatory",
        ),
    )
)
_PEOPLE = _words("Ada Bruno Chen Dana Elif Farid Greta Hugo Ines Jonas Kira Luis Mira Nils Omar")
_CONNECTORS = _words(
    "However|Meanwhile|In practice|As a result|Later that week|For that reason|Surprisingly", "|"
)
_MONTHS = _words("January March May July September November")
_SENTENCES = (
    "The {adj} {noun} {verb} {place}.",
    "{connector}, {person} said the {noun} {past} {place}.",
    "When the {noun} {verb}, the {noun2} looks {adj2} for a while.",
    "{person} wrote that the {noun} was {adj}, but the {noun2} was {adj2}.",
    "In {year}, the {adj} {noun} {past} {place}, and nobody noticed until {month}.",
    "Ask {person} about the {noun}; the answer is longer than you expect.",
    "Nobody expected the {noun} to be so {adj} {place}.",
    "It took {count} minutes before the {noun2} {past} again.",
    '"The {noun} {verb} {place}," {person} said, "and the {noun2} is still {adj2}."',
)


def _sentence(rng: Rng, topic: tuple[tuple[str, ...], ...]) -> str:
    nouns, verbs, pasts, adjectives, places = topic
    return rng.pick(_SENTENCES).format(
        noun=rng.pick(nouns),
        noun2=rng.pick(nouns),
        verb=rng.pick(verbs),
        past=rng.pick(pasts),
        adj=rng.pick(adjectives),
        adj2=rng.pick(adjectives),
        place=rng.pick(places),
        person=rng.pick(_PEOPLE),
        connector=rng.pick(_CONNECTORS),
        month=rng.pick(_MONTHS),
        year=rng.between(1650, 2024),
        count=rng.between(2, 90),
    )


def _paragraph(rng: Rng, low: int = 3, high: int = 7) -> str:
    topic = rng.pick(_TOPICS)
    return " ".join(_sentence(rng, topic) for _ in range(rng.between(low, high))) + "\n\n"


def prose(seed: int = 0) -> Iterator[str]:
    """English paragraphs on clusters, networks, cooking, travel, history and the sky."""
    rng = Rng(seed)
    while True:
        yield _paragraph(rng)


# --- code ----------------------------------------------------------------------------------

_VERBS = _words("load parse merge count fetch build render check split drain resolve collect")
_NOUNS = _words("record host batch token config entry frame packet chunk route slot metric")
_FUNCTIONS = (
    '''def {verb}_{noun}s(items: list[dict[str, int]], limit: int = {n}) -> list[dict[str, int]]:
    """{Verb} the {noun}s of one {noun2}, at most ``limit`` of them."""
    result = []
    for index, item in enumerate(items):
        if index >= limit:
            break
        if item.get("{noun2}", 0) > {m}:
            result.append(item)
    return result
''',
    '''def {verb}_{noun}(path: str) -> dict[str, str]:
    """Read ``key = value`` lines of a {noun} file; later keys win."""
    values: dict[str, str] = {{}}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition("=")
            if key.strip() and not key.startswith("#"):
                values[key.strip()] = value.strip()
    return values
''',
    '''class {Noun}{Noun2}:
    """Keeps the last {n} {noun}s seen per {noun2}."""

    def __init__(self, size: int = {n}) -> None:
        self.size = size
        self.seen: dict[str, list[float]] = {{}}

    def add(self, key: str, value: float) -> None:
        window = self.seen.setdefault(key, [])
        window.append(value)
        del window[: -self.size]

    def mean(self, key: str) -> float:
        window = self.seen.get(key) or [0.0]
        return sum(window) / len(window)
''',
    """async def {verb}_{noun}_with_retry(client, url: str, attempts: int = {small}) -> bytes:
    # The {noun2} is flaky right after a restart, so a few quick retries are expected.
    for attempt in range(attempts):
        try:
            response = await client.get(url, timeout={m}.0)
            response.raise_for_status()
            return response.content
        except OSError as exc:
            if attempt == attempts - 1:
                raise RuntimeError(f"{verb} {noun} failed: {{exc}}") from exc
    return b""
""",
)


def _function(rng: Rng) -> str:
    verb, noun, noun2 = rng.pick(_VERBS), rng.pick(_NOUNS), rng.pick(_NOUNS)
    return rng.pick(_FUNCTIONS).format(
        verb=verb,
        Verb=verb.capitalize(),
        noun=noun,
        Noun=noun.capitalize(),
        noun2=noun2,
        Noun2=noun2.capitalize(),
        n=rng.between(4, 512),
        m=rng.between(1, 99),
        small=rng.between(2, 6),
    )


def code(seed: int = 0) -> Iterator[str]:
    """A Python module that never ends: imports, then functions and classes."""
    rng = Rng(seed)
    yield '"""Helpers for the batch pipeline."""\n\nfrom __future__ import annotations\n\n\n'
    while True:
        yield _function(rng) + "\n\n"


# --- JSON, numbers, other scripts ----------------------------------------------------------

_SCRIPTS = (
    ("café naïve façade über Straße mañana jalapeño smörgåsbord crème brûlée Zürich", " "),
    ("λόγος θάλασσα ήλιος δίκτυο γνώση ουρανός νερό φως χρόνος πόλη δρόμος", " "),
    ("服务器 网络 数据 模型 集群 延迟 吞吐量 内存 计算 节点 今天 天气", ""),
    ("こんにちは 東京 ネットワーク 計算機 ありがとう 桜 山 川 データ", ""),
    ("서버 네트워크 안녕하세요 데이터 모델 오늘", " "),
    ("сеть сервер память узел привет мир работа", " "),
)
_EMOJI = _words("🚀 📦 ✅ 🔥 🙂 🌍 🧪 ⚡ 🍜 🎉")


def _host(rng: Rng) -> str:
    return f"{rng.pick(('node', 'gpu', 'edge', 'db'))}-{rng.between(1, 24):02d}"


def _date(rng: Rng) -> str:
    return f"2024-{rng.between(1, 12):02d}-{rng.between(1, 28):02d}"


def _json_record(rng: Rng) -> dict[str, Any]:
    """One plausible inventory or metrics record."""
    return {
        "id": rng.between(1000, 99999),
        "host": _host(rng),
        "kind": rng.pick(_NOUNS),
        "enabled": rng.chance(0.7),
        "latency_ms": round(rng.real(250), 2),
        "tags": [rng.pick(_VERBS) for _ in range(rng.between(1, 4))],
        "owner": rng.pick(_PEOPLE),
        "note": None if rng.chance(0.5) else _sentence(rng, rng.pick(_TOPICS)),
        "metrics": {"tokens": rng.between(1, 200000), "ratio": round(rng.real(1), 4)},
        "updated": _date(rng),
    }


def _numbers(rng: Rng) -> str:
    return (
        f"Run {rng.between(1, 9999)} on {_date(rng)}: {rng.between(16, 131072)} tokens in "
        f"{rng.real(300):.2f} s ({rng.between(1000, 10**9):,} bytes, {rng.real(100):.1f}% "
        f"busy), checksum 0x{rng.below(2**32):08x}, p99 {rng.real(2000):.3f} ms.\n\n"
    )


def _other_script(rng: Rng) -> str:
    words, joiner = rng.pick(_SCRIPTS)
    line = joiner.join(rng.pick(words.split()) for _ in range(rng.between(3, 8)))
    return f"{line} {rng.pick(_EMOJI)}\n\n"


def mixed(seed: int = 0) -> Iterator[str]:
    """Short prose interleaved with Python, JSON, numbers and non-ASCII lines, in a fixed
    rotation so that every kind shows up within the first two thousand characters."""
    rng = Rng(seed)
    while True:
        for kind in ("prose", "code", "intl", "json", "prose", "numbers", "intl", "prose"):
            if kind == "prose":
                yield _paragraph(rng, 2, 4)
            elif kind == "code":
                yield f"```python\n{_function(rng)}```\n\n"
            elif kind == "json":
                yield f"```json\n{json.dumps(_json_record(rng), ensure_ascii=False)}\n```\n\n"
            elif kind == "numbers":
                yield _numbers(rng)
            else:
                yield _other_script(rng)


# --- agent conversations -------------------------------------------------------------------

# name, description, {parameter: (JSON type, description)}, required parameters
_TOOLS: tuple[tuple[str, str, dict[str, tuple[str, str]], tuple[str, ...]], ...] = (
    (
        "get_host_status",
        "Report load, memory use and temperature of one host.",
        {"host": ("string", "Host name, e.g. node-03"), "verbose": ("boolean", "Per core")},
        ("host",),
    ),
    (
        "run_command",
        "Run a shell command on a host and return its exit status and output.",
        {
            "host": ("string", "Host name"),
            "command": ("string", "The command line"),
            "timeout_s": ("number", "Give up after this many seconds"),
        },
        ("host", "command"),
    ),
    (
        "read_file",
        "Read a text file from a host.",
        {"host": ("string", "Host name"), "path": ("string", "Absolute path")},
        ("host", "path"),
    ),
    (
        "search_logs",
        "Search the service logs of the cluster for a pattern.",
        {
            "pattern": ("string", "A regular expression"),
            "since": ("string", "An ISO 8601 date"),
            "limit": ("integer", "Most lines to return"),
        },
        ("pattern",),
    ),
)
_COMMANDS = ("uptime", "df -h /", "ip -s link", "journalctl -u llama -n 50", "nvidia-smi", "free")
_PATHS = ("/etc/hosts", "/etc/llama/server.toml", "/var/log/syslog", "/srv/models/index.json")
_QUESTIONS = (
    "Can you check why {host} is so slow since {date}?",
    "The {noun} on {host} keeps failing. What is going on?",
    "Please look at {path} on {host} and tell me whether the {noun} is set up right.",
    "Were there any errors about the {noun} in the logs this week?",
)


def tool_schemas() -> list[dict[str, Any]]:
    """The tools of the agent conversations, as OpenAI-style function schemas."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        k: {"type": t, "description": d} for k, (t, d) in params.items()
                    },
                    "required": list(required),
                },
            },
        }
        for name, description, params, required in _TOOLS
    ]


def _system_prompt() -> str:
    tools = "\n".join(json.dumps(schema) for schema in tool_schemas())
    return (
        "You are a careful operations assistant for a small compute cluster. Check facts "
        "with the tools before you answer, and answer briefly.\n\n# Tools\n\nYou may call "
        "one or more functions. Their signatures are inside <tools></tools>:\n<tools>\n"
        f'{tools}\n</tools>\n\nTo call a function, write <tool_call>{{"name": ..., '
        '"arguments": {...}}</tool_call> and wait for its result.'
    )


def _argument(rng: Rng, name: str, kind: str, host: str) -> Any:
    if name == "host":
        return host
    if name == "command":
        return rng.pick(_COMMANDS)
    if name == "path":
        return rng.pick(_PATHS)
    if name == "pattern":
        return f"{rng.pick(_NOUNS)}|{rng.pick(_VERBS)}"
    if name == "since":
        return _date(rng)
    if kind == "boolean":
        return rng.chance(0.5)
    if kind == "integer":
        return rng.between(1, 200)
    return round(rng.real(120), 1)


def _log_line(rng: Rng, host: str) -> str:
    return (
        f"{_date(rng)}T{rng.between(0, 23):02d}:{rng.between(0, 59):02d}:00Z {host} "
        f"llama-server[{rng.between(100, 99999)}]: slot {rng.below(4)} "
        f"{rng.pick(_VERBS)} {rng.between(1, 4096)} tokens in {rng.real(9):.2f} s"
    )


def agentic_turns(seed: int = 0) -> Iterator[tuple[str, str]]:
    """(role, content) turns: a system prompt with the tool schemas, then episodes of a user
    question, one to three tool calls (written as ``<tool_call>`` text in the assistant's
    content, since chat templates drop structured tool calls) with their results, and the
    assistant's answer."""
    rng = Rng(seed)
    yield "system", _system_prompt()
    while True:
        host = _host(rng)
        fields = {"host": host, "date": _date(rng), "noun": rng.pick(_NOUNS)}
        yield "user", rng.pick(_QUESTIONS).format(path=rng.pick(_PATHS), **fields)
        for _ in range(rng.between(1, 3)):
            name, _, params, _ = rng.pick(_TOOLS)
            arguments = {k: _argument(rng, k, t, host) for k, (t, _) in params.items()}
            call = json.dumps({"name": name, "arguments": arguments})
            yield "assistant", f"Let me check with {name}.\n<tool_call>{call}</tool_call>"
            lines = [_log_line(rng, host) for _ in range(rng.between(1, 5))]
            result = {
                "ok": rng.chance(0.8),
                "output": "\n".join(lines),
                "record": _json_record(rng),
            }
            yield "tool", json.dumps(result)
        yield "assistant", _paragraph(rng, 2, 4).strip()
