"""Screen playbooks: the shipped matrices plan the published cases; mistakes name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import REPO

from cluster.config.loader import load_profile
from cluster.errors import ConfigError
from cluster.measure.ceiling import CeilingSearch
from cluster.measure.playbook import load_screen, plan, resolve_target

PLAYBOOKS = REPO / "playbooks"
# The demo's own profile and screen, embedded in the package (clusterctl demo).
DEMO_PLAYBOOKS = REPO / "cluster" / "defaults" / "playbooks"


def planned(
    name: str, playbooks: Path = PLAYBOOKS
) -> list[tuple[str, int, int, str, int, int]]:
    book, _ = load_screen(playbooks, name)
    profiles = {c.profile: load_profile(playbooks, c.profile) for c in book.configs}
    return [
        (case.config, case.ctx_size, case.parallel, case.shape, case.target, case.attempt)
        for _, _, cases in plan(book, profiles)
        for case in cases
    ]


def test_minimax_shape_screen_is_the_published_matrix() -> None:
    cases = planned("minimax-rpc-shapes")
    assert len(cases) == 16  # 2 models x 2 targets x 2 shapes x 2 attempts
    assert {(c[0], c[1], c[2]) for c in cases} == {
        ("reap-q8-np2-ctx100k", 100000, 2),
        ("q3km-np2-ctx200k", 200000, 2),
    }
    assert {c[4] for c in cases if c[0] == "reap-q8-np2-ctx100k"} == {45000, 48000}
    assert {c[4] for c in cases if c[0] == "q3km-np2-ctx200k"} == {70000, 90000}
    assert {c[3] for c in cases} == {"opt", "natural"}


def test_qwen_ladder_prompts_at_half_the_context() -> None:
    cases = planned("qwen397-context-ladder")
    assert [(c[1], c[2], c[4]) for c in cases] == [
        (150000, 1, 75000),
        (200000, 1, 100000),
        (250000, 1, 125000),
        (300000, 1, 150000),
    ]


def test_demo_screen_covers_every_shape() -> None:
    cases = planned("demo-shapes", DEMO_PLAYBOOKS)
    assert {c[3] for c in cases} >= {"opt", "contexttoken", "natural", "mixed", "agentic"}
    assert {c[4] for c in cases} == {200, 614}  # 60% of a 1024-token slot


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "screens").mkdir(exist_ok=True)
    (tmp_path / "p.toml").write_text('model = "/m.gguf"\nrpc_hosts = ["a"]\ntensor_split = "1"\n')
    path = tmp_path / "screens" / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            'targets = [1]\n[[configs]]\nname = "a"\nprofile = "p"\nbogus = 1\n',
            "configs.0.bogus",
            "unknown key",
        ),
        (
            'targets = [1]\nshapes = ["nope"]\n[[configs]]\nname = "a"\nprofile = "p"\n',
            None,
            "unknown shape 'nope'",
        ),
        ('[[configs]]\nname = "a"\nprofile = "p"\n', None, "has no targets"),
        ('targets = ["150%x"]\n[[configs]]\nname = "a"\nprofile = "p"\n', "targets.0", ""),
        (
            'targets = [1]\n[[configs]]\nname = "a"\nprofile = "p"\n[[configs]]\nname = "a"\nprofile = "p"\n',
            None,
            "repeat: a",
        ),
        (
            'targets = [1]\nrestart = "sometimes"\n[[configs]]\nname = "a"\nprofile = "p"\n',
            "restart",
            "",
        ),
        (
            'targets = [1]\n[shape_files]\nmine = "no-such.txt"\n[[configs]]\nname = "a"\nprofile = "p"\n',
            "shape_files.mine",
            "does not exist",
        ),
    ],
)
def test_mistakes_name_file_and_key(tmp_path: Path, text: str, key: str | None, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_screen(tmp_path, "s")
    message = str(caught.value)
    assert str(path) in message
    if key:
        assert key in message
    assert words in message


def test_percent_targets_need_a_context_size(tmp_path: Path) -> None:
    write(tmp_path, 'targets = ["50%"]\n[[configs]]\nname = "a"\nprofile = "p"\nctx_size = 0\n')
    book, _ = load_screen(tmp_path, "s")
    with pytest.raises(ConfigError, match="needs a ctx_size"):
        plan(book, {"p": load_profile(tmp_path, "p")})


def test_missing_screen_lists_those_there(tmp_path: Path) -> None:
    write(tmp_path, 'targets = [1]\n[[configs]]\nname = "a"\nprofile = "p"\n')
    with pytest.raises(ConfigError, match=r"no screen playbook named 'x' \(screens there: s\)"):
        load_screen(tmp_path, "x")


def test_resolve_target() -> None:
    assert resolve_target(4096, 50000) == 4096
    assert resolve_target("50%", 150000) == 75000
    assert resolve_target("12.5%", 1000) == 125


def search_with(threshold: int, **kwargs: int) -> CeilingSearch:
    search = CeilingSearch(**kwargs)  # type: ignore[arg-type]
    while (target := search.next_target()) is not None:
        assert target not in [t for t, _ in search.ladder], "a target was probed twice"
        search.record(target, target <= threshold)
    return search


@pytest.mark.parametrize("threshold", [64, 100, 991, 992, 5000, 9999, 10000])
def test_ceiling_search_finds_the_threshold_within_resolution(threshold: int) -> None:
    search = search_with(threshold, start=1250, limit=10000, resolution=16)
    assert search.ceiling is not None
    assert threshold - 16 <= search.ceiling <= threshold
    assert len(search.ladder) <= 4 + 10  # ladder rungs + bisection steps


def test_ceiling_search_when_nothing_passes_or_everything_does() -> None:
    assert search_with(10, start=1000, limit=4000, resolution=16).ceiling is None
    everything = search_with(10**9, start=1000, limit=4000, resolution=16)
    assert everything.ceiling == 4000
    assert [t for t, _ in everything.ladder] == [1000, 2000, 4000]
