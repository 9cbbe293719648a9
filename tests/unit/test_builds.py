"""The llama.cpp builder on a stand-in sdist that builds in seconds (real CMake, real cc):
what the cache records, when it builds again, and that the binaries do not depend on
where the cache is."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import fake_sdist

from cluster.builds import local, sdist
from cluster.builds.recipe import BASE_OPTIONS, Generation, Recipe

FAKE = Generation("fake", "0.0.1", "ggml-rpc-server")

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("cc") is None, reason="needs cmake and cc"
)


def cache(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> Path:
    root = tmp_path / name
    fake_sdist(root / "llama.cpp" / "sdist", FAKE.sdist_version, extra)
    monkeypatch.setenv("CLUSTERCTL_CACHE", str(root))
    return root


def build(recipe: Recipe) -> tuple[Path, list[str]]:
    said: list[str] = []
    return local.ensure_build(recipe, jobs=2, say=said.append), said


def test_the_sdist_commit_comes_from_its_submodule_record(tmp_path: Path) -> None:
    archive = fake_sdist(tmp_path, "0.0.1")
    assert sdist.commit(archive) == "0123456"
    tree = sdist.extract_tree(archive, tmp_path / "src")
    assert sorted(p.name for p in tree.iterdir()) == ["CMakeLists.txt", "main.c"]  # no .git


def test_a_build_records_its_provenance_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = cache(tmp_path, "a", monkeypatch)
    bins, said = build(Recipe(FAKE))
    assert len(said) == 1 and "not built yet" in said[0]
    out = subprocess.run([bins / "llama-server"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("version: 0 (0123456) llama-server")
    recorded = json.loads((root / "llama.cpp" / "0.0.1" / "built.json").read_text())
    archive = root / "llama.cpp" / "sdist" / "llama_cpp_python-0.0.1.tar.gz"
    assert recorded == {
        "generation": "fake",
        "sdist": "llama_cpp_python-0.0.1.tar.gz",
        "sdist_sha256": sdist.sha256(archive),
        "commit": "0123456",
        "backend": "cpu",
        "cmake_options": list(BASE_OPTIONS),
        "targets": ["llama-server", "ggml-rpc-server", "llama-bench"],
    }
    again, said_again = build(Recipe(FAKE))
    assert again == bins and said_again == []


def test_a_changed_sdist_or_recipe_is_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = cache(tmp_path, "a", monkeypatch)
    bins, _ = build(Recipe(FAKE))
    # Same name, other content (a re-released sdist): its SHA-256 differs.
    fake_sdist(root / "llama.cpp" / "sdist", FAKE.sdist_version, "/* changed */\n")
    _, said = build(Recipe(FAKE))
    assert len(said) == 1 and "recorded provenance differs" in said[0]
    # Other CMake options are another build, in a folder of their own.
    other, said = build(Recipe(FAKE, extra_options=("-DFAKE_OPTION=1",)))
    assert other != bins and other.parent.parent.name.startswith("0.0.1-cpu-")
    assert "not built yet" in said[0]
    # A build whose files went missing is made again.
    (bins / "llama-bench").unlink()
    _, said = build(Recipe(FAKE))
    assert "not built yet" in said[0] and (bins / "llama-bench").is_file()


def test_binaries_do_not_depend_on_where_the_cache_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache(tmp_path, "first", monkeypatch)
    first, _ = build(Recipe(FAKE))
    cache(tmp_path, "second/deeper", monkeypatch)
    second, _ = build(Recipe(FAKE))
    assert first != second
    for name in FAKE.targets:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    printed = subprocess.run([second / "llama-server"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in printed and "/llama.cpp/main.c" in printed
