"""Sweep playbooks: sources of splits, objectives, the time budget, and their mistakes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from support import REPO

from cluster.errors import ConfigError
from cluster.sweep.playbook import Objective, deadline, load_sweep


def write(tmp_path: Path, text: str) -> None:
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    (tmp_path / "sweeps" / "s.toml").write_text('profile = "p"\n' + text)


def test_a_range_gives_the_grid_in_order(tmp_path: Path) -> None:
    write(tmp_path, 'range = { start = "0.6/1.4", stop = "1.4/0.6", step = 0.2 }\n')
    book = load_sweep(tmp_path, "s")
    assert book.candidates(2) == [[0.6, 1.4], [0.8, 1.2], [1.0, 1.0], [1.2, 0.8], [1.4, 0.6]]
    assert (book.strategy, book.objective.metric, book.measure.tokens) == ("grid", "tg_tps", 512)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            'splits = ["1/1"]\nrange = { start = "1/1", stop = "1/1", step = 0.1 }\n',
            "exactly one of",
        ),
        ("", "exactly one of"),
        ('strategy = "adaptive"\nsplits = ["1/1"]\n', "searches a range or grid"),
        ('splits = ["1,1"]\n', "uses ','"),
        ('splits = ["1/1"]\n[measure]\nconcurrency = 2\n', "one request at a time"),
        ('splits = ["1/1"]\n[objective]\nmetric = "speed"\n', "objective.metric"),
        ('range = { start = "0.6/1.4", stop = "1.4/0.8", step = 0.1 }\n', ""),
    ],
)
def test_mistakes_name_the_file(tmp_path: Path, text: str, words: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_sweep(tmp_path, "s")
    assert str(tmp_path / "sweeps" / "s.toml") in str(caught.value)
    assert words in str(caught.value)


def test_objectives() -> None:
    assert Objective(metric="tg_tps").score(300.0, 15.0, 512, 128) == 15.0
    assert Objective(metric="pp_tps").score(300.0, 15.0, 512, 128) == 300.0
    # mixed: tokens per second over the whole request (512 prompt + 128 generated).
    mixed = Objective(metric="mixed").score(300.0, 15.0, 512, 128)
    assert mixed == pytest.approx(640 / (512 / 300 + 128 / 15))
    weighted = Objective(metric="mixed", weights={"pp": 0.0, "tg": 1.0})
    assert weighted.score(300.0, 15.0, 512, 128) == pytest.approx(15.0)
    assert Objective(metric="mixed").score(None, 15.0, 512, 128) is None


def test_deadline_of_a_time_of_day_and_of_a_duration() -> None:
    now = datetime(2026, 11, 21, 23, 30).timestamp()
    assert datetime.fromtimestamp(deadline("07:00", now)) == datetime(2026, 11, 22, 7, 0)
    assert datetime.fromtimestamp(deadline("23:45", now)) == datetime(2026, 11, 21, 23, 45)
    assert deadline("6h", now) == now + 6 * 3600
    assert deadline("1h30m", now) == now + 5400
    assert deadline("90m", now) == now + 5400
    for bad in ("25:00", "7", "soon", ""):
        with pytest.raises(ValueError):
            deadline(bad, now)


def test_the_shipped_sweep_loads() -> None:
    book = load_sweep(REPO / "playbooks", "minimax-q8-split")
    assert book.profile == "minimax-q8"
    assert [0.6, 1.4] in book.candidates(2) and [1.4, 0.6] in book.candidates(2)
