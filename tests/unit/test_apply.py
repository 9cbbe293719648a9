"""Writing a sweep's split back into a profile: one line changes, everything else stays byte
for byte, the profile still loads, and the write is atomic."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cluster.config.loader import load_profile
from cluster.errors import ConfigError
from cluster.report.apply import apply_split, write_applied

PROFILE = """\
# MiniMax M2.5 REAP Q8 over both Strix Halo boxes (USB4 link).
# Loads in about 190 s with direct I/O; without it load_tensors hangs.
description = "MiniMax REAP Q8, split over evo and bee"
model = "/models/minimax/MiniMax-M2.5-REAP-139B-A10B-Q8_0.gguf"
rpc_hosts = ["evo", "bee"]

tensor_split = "1/1"   # even, until a sweep says otherwise
n_gpu_layers = 99
ctx_size = 100000      # two slots of 50k
parallel = 2
flash_attn = "on"
extra_args = ["--no-mmap"]  # tensor_split = "9/9" in a comment is not a key
"""


def write(tmp_path: Path, text: str, name: str = "minimax-q8.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    lines = diff.split("\n")  # not splitlines: a \r of the file stays on its line
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_only_the_split_line_changes_and_the_profile_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILE)
    new, diff = apply_split(path, [1.2, 0.8])
    assert new == PROFILE.replace(
        'tensor_split = "1/1"   # even', 'tensor_split = "1.2/0.8"   # even'
    )
    assert path.read_text() == PROFILE  # nothing written yet
    assert diff.startswith(f"--- {path}\n+++ {path}\n@@ ")
    assert changed_lines(diff) == (
        ['-tensor_split = "1/1"   # even, until a sweep says otherwise'],
        ['+tensor_split = "1.2/0.8"   # even, until a sweep says otherwise'],
    )
    write_applied(path, new)
    assert path.read_text() == new
    profile = load_profile(tmp_path, "minimax-q8")
    assert profile.tensor_split == [1.2, 0.8]
    assert profile.ctx_size == 100000 and profile.extra_args == ["--no-mmap"]


def test_an_array_split_over_lines_becomes_one_line(tmp_path: Path) -> None:
    text = PROFILE.replace(
        'tensor_split = "1/1"   # even, until a sweep says otherwise\n',
        "tensor_split = [\n  1.0,  # evo\n  1.0,  # bee\n]  # even\n",
    )
    path = write(tmp_path, text)
    new, diff = apply_split(path, [0.75, 1.25])
    assert 'tensor_split = "0.75/1.25"  # even\nn_gpu_layers = 99\n' in new
    removed, added = changed_lines(diff)
    assert removed == ["-tensor_split = [", "-  1.0,  # evo", "-  1.0,  # bee", "-]  # even"]
    assert added == ['+tensor_split = "0.75/1.25"  # even']
    write_applied(path, new)
    assert load_profile(tmp_path, "minimax-q8").tensor_split == [0.75, 1.25]


def test_crlf_line_endings_and_a_missing_final_newline_are_kept(tmp_path: Path) -> None:
    text = 'model = "/m/x.gguf"\r\nrpc_hosts = ["a", "b"]\r\ntensor_split = [1, 1]\r\nparallel = 1'
    path = write(tmp_path, text)
    new, diff = apply_split(path, [1.2, 0.8])
    assert new == text.replace("tensor_split = [1, 1]", 'tensor_split = "1.2/0.8"')
    assert changed_lines(diff) == (["-tensor_split = [1, 1]\r"], ['+tensor_split = "1.2/0.8"\r'])
    write_applied(path, new)
    assert path.read_bytes() == new.encode()


def test_the_same_split_is_no_change(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILE)
    assert apply_split(path, [1.0, 1.0]) == (PROFILE, "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "x.gguf"\n# tensor_split = "1/1"\n', "no top-level `tensor_split = ...` line"),
        ('model = "x.gguf"\n[extra]\ntensor_split = "1/1"\n', "no top-level `tensor_split"),
        (
            'tensor_split = "1/1"\nmodel = "x"\ntensor_split = "2/1"\n',
            "several `tensor_split` lines",
        ),
        ('tensor_split = "1/1/1"\n', "splits over 3 devices (1/1/1), the new split 1.2/0.8"),
        ("tensor_split = [1.0,\n 1.0\n", "is not closed"),
    ],
)
def test_a_profile_without_one_usable_split_line_is_a_config_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        apply_split(path, [1.2, 0.8])
    assert raised.value.key == "tensor_split"
    assert raised.value.file == str(path)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{path}: tensor_split: ")


def test_an_invalid_split_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILE)
    with pytest.raises(ConfigError, match="proportions must be >= 0"):
        apply_split(path, [-1.0, 2.0])


def test_write_applied_keeps_permissions_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILE)
    path.chmod(0o640)
    inode = path.stat().st_ino
    new, _ = apply_split(path, [1.2, 0.8])
    write_applied(path, new)
    assert path.read_text() == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minimax-q8.toml"]


def test_write_applied_through_a_symbolic_link_keeps_the_link(tmp_path: Path) -> None:
    real = write(tmp_path, PROFILE, "real.toml")
    (tmp_path / "playbooks").mkdir()
    link = tmp_path / "playbooks" / "minimax-q8.toml"
    link.symlink_to(real)
    new, _ = apply_split(link, [1.2, 0.8])
    write_applied(link, new)
    assert link.is_symlink()
    assert real.read_text() == new


def test_write_applied_failure_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write") as raised:
        write_applied(tmp_path / "missing-dir" / "p.toml", PROFILE)
    assert raised.value.file == str(tmp_path / "missing-dir" / "p.toml")
