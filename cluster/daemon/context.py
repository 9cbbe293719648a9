"""What every part of the daemon shares: the configuration, the record, the hosts, the
event stream and the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from cluster.config.daemon import DaemonConfig
from cluster.config.loader import load_profile
from cluster.config.models import Inventory, Profile
from cluster.daemon.events import EventBus
from cluster.daemon.metrics import Metrics
from cluster.daemon.records import DaemonRecord
from cluster.daemon.usage import Usage
from cluster.store import Store
from cluster.transport.pool import HostPool

log = structlog.get_logger("clusterctl.daemon")


@dataclass
class DaemonContext:
    inventory: Inventory
    playbooks_dir: Path
    state_dir: Path
    store: Store
    pool: HostPool
    environ: Mapping[str, str]
    events: EventBus = field(default_factory=EventBus)
    metrics: Metrics = field(default_factory=Metrics)
    usage: Usage = field(default_factory=Usage)  # what the front door saw

    @property
    def config(self) -> DaemonConfig:
        return self.inventory.daemon

    @property
    def record(self) -> DaemonRecord:
        return DaemonRecord(self.store)

    def profile(self, name: str) -> Profile:
        return load_profile(self.playbooks_dir, name)

    def say(self, message: str) -> None:
        log.info(message)
