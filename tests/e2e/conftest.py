"""The real two-host testbed, shared by the end-to-end tests of one session.

``bed`` is a 2-host testbed (namespaces, sshd, a 1 Gbit/s direct link); ``cluster``
wraps it with an inventory, profiles and the real CLI, and stops whatever a test left
running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Cluster

from cluster.testbed.bed import Testbed, TestbedSpec, create
from cluster.testbed.models import LOADABLE_SLOW, TINY, cached_model


@pytest.fixture(scope="session")
def bed(
    tmp_path_factory: pytest.TempPathFactory, current_bin: Path, legacy_bin: Path
) -> Iterator[Testbed]:
    with create(
        TestbedSpec(n_hosts=2, root=tmp_path_factory.mktemp("bed"), link_rate="1gbit")
    ) as testbed:
        yield testbed


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return cached_model(TINY)[0]


@pytest.fixture(scope="session")
def slow_model() -> Path:
    return cached_model(LOADABLE_SLOW)[0]


@pytest.fixture
def cluster(bed: Testbed, tmp_path: Path, current_bin: Path, legacy_bin: Path) -> Iterator[Cluster]:
    view = Cluster(bed, tmp_path, {"current": current_bin, "legacy": legacy_bin})
    view.write_inventory()
    for name in bed.names:  # the run directories outlive a test: start from empty logs
        for old in view.run_dir(name).glob("*.log*"):
            old.unlink()
    yield view
    view.run("down", timeout=120)
