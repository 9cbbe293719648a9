"""The multi-host testbed: network namespaces, sshd in each, and an inventory for them.

``create(spec)`` builds it and returns a :class:`Testbed`; on any failure it tears down
what it made. The testbed's description (spec, names, addresses, sshd pids) is written to
``<root>/testbed.json`` before anything is created and updated as it grows, so
``Testbed.load(root).destroy()`` in another process (``clusterctl testbed down``) removes
it, even one whose creator was killed halfway. Files under ``root``::

    testbed.json
    client/id_ed25519, authorized_keys, known_hosts    the controller's side of ssh
    hosts/<name>/sshd/                                  sshd_config, host key, pid, log
    hosts/<name>/run, hosts/<name>/rpc-cache            run_dir and rpc_cache_dir
    state/                                              the controller's state_dir

The namespaces share one filesystem, so every host gets its own directories; and one
home (/root), so run_dir and rpc_cache_dir are absolute.

Fault injection (``link_down``, ``route_link_via_mgmt``, ``hold_port``...) changes one
host's namespace the way a real fault would change the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from pydantic import ValidationError

from cluster.testbed import network
from cluster.testbed.network import (
    LINK_IFACE,
    MGMT_IFACE,
    TestbedError,
)
from cluster.testbed.spec import RATE_PATTERN, TestbedHost, TestbedRecord, TestbedSpec
from cluster.testbed.sshd import (
    generate_key,
    known_hosts_text,
    plan_sshd,
    prepare_sshd,
    start_sshd,
)
from cluster.testbed.tomltext import toml_key, toml_value

__all__ = ["Testbed", "TestbedHost", "TestbedRecord", "TestbedSpec", "create"]

log = structlog.get_logger(__name__)

RPC_PORT = 50052
STATE_FILE = "testbed.json"


class Testbed:
    """A live (or torn down) testbed; everything it does is keyed by host name."""

    __test__ = False

    def __init__(self, record: TestbedRecord) -> None:
        self.record = record

    # -- description --------------------------------------------------------------------

    @property
    def spec(self) -> TestbedSpec:
        return self.record.spec

    @property
    def root(self) -> Path:
        return self.record.spec.root

    @property
    def tag(self) -> str:
        return self.record.spec.tag

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.record.hosts]

    @property
    def head(self) -> str:
        return self.names[0]

    @property
    def hosts(self) -> dict[str, TestbedHost]:
        return {host.name: host for host in self.record.hosts}

    @property
    def client_key(self) -> Path:
        return self.record.client_key

    @property
    def known_hosts(self) -> Path:
        return self.record.known_hosts

    def host(self, name: str) -> TestbedHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise TestbedError(f"no host {name!r} (hosts: {', '.join(self.names)})") from None

    # -- persistence and lifecycle ------------------------------------------------------

    def save(self) -> None:
        """Write testbed.json atomically (temporary file, then rename)."""
        path = self.root / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
        tmp.write_text(self.record.model_dump_json(indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, root: Path) -> Testbed:
        """Read the testbed described in ``<root>/testbed.json``."""
        path = root / STATE_FILE
        try:
            return cls(TestbedRecord.model_validate_json(path.read_text()))
        except FileNotFoundError:
            raise TestbedError(f"{path}: no testbed here") from None
        except (OSError, ValidationError) as exc:
            raise TestbedError(f"{path}: not a testbed description ({exc})") from exc

    def destroy(self) -> None:
        """Remove every namespace, interface and process of this testbed; idempotent."""
        pids = [host.sshd.pid for host in self.record.hosts if host.sshd.pid is not None]
        problems = network.teardown_network(self.record.network, pids)
        leftovers = network.find_leftovers(self.tag).get(self.tag, [])
        if problems or leftovers:
            raise TestbedError(
                f"testbed {self.tag} not fully removed: {'; '.join(problems) or leftovers}"
            )
        if self.record.status != "destroyed":
            self.record = self.record.model_copy(update={"status": "destroyed"})
            self.save()
        log.info("testbed.destroyed", tag=self.tag, root=str(self.root))

    def __enter__(self) -> Testbed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # -- inventory ----------------------------------------------------------------------

    def write_inventory(
        self,
        path: Path,
        bin_dirs: dict[str, str],
        *,
        head: str | None = None,
        extra: dict[str, dict[str, object]] | None = None,
    ) -> Path:
        """Write a hosts.toml for this testbed that ``load_inventory`` reads; returns path.

        ``bin_dirs`` gives each host's llama.cpp build; ``extra`` adds or overrides keys of
        single hosts (``{"bee": {"memory_budget_gib": 2.0}}``).
        """
        missing = [name for name in self.names if name not in bin_dirs]
        unknown = sorted(set(extra or {}) - set(self.names))
        if missing or unknown:
            raise TestbedError(f"write_inventory: no bin dir for {missing}, unknown {unknown}")
        head = head or self.head
        self.host(head)
        lines = [
            f"# Written for clusterctl testbed {self.tag} ({self.root}); valid while it is up.",
            "[cluster]",
            f"name = {toml_value(f'testbed-{self.tag}')}",
            f"head = {toml_value(head)}",
            "",
            "[controller]",
            f"state_dir = {toml_value(self.record.state_dir)}",
        ]
        for host in self.record.hosts:
            keys: dict[str, object] = {
                "transport": "ssh",
                "ssh_target": host.mgmt_address,
                "user": "root",
                "ssh_key": self.client_key,
                "known_hosts": self.known_hosts,
                "link_address": host.link_address,
                "link_interface": LINK_IFACE,
                "rpc_port": RPC_PORT,
                "llama_bin_dir": bin_dirs[host.name],
                "run_dir": host.run_dir,
                "rpc_cache_dir": host.rpc_cache_dir,
            }
            keys.update((extra or {}).get(host.name, {}))
            lines += ["", f"[hosts.{toml_key(host.name)}]"]
            lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in keys.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def ssh_argv(self, name: str, command: Sequence[str] = ()) -> list[str]:
        """An OpenSSH client command line to ``name`` with host key checking on."""
        options = {
            "IdentitiesOnly": "yes",
            "BatchMode": "yes",
            "ConnectTimeout": "5",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
        }
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.client_key)]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, f"root@{self.host(name).mgmt_address}", *command]

    # -- running things inside a host ---------------------------------------------------

    def netns_argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.host(name).namespace, *argv]

    def exec(
        self, name: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` inside host ``name``'s namespace."""
        return subprocess.run(self.netns_argv(name, argv), **kwargs)

    def popen(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen`` inside host ``name``'s namespace."""
        return subprocess.Popen(self.netns_argv(name, argv), **kwargs)

    @contextlib.contextmanager
    def hold_port(self, name: str, address: object, port: int) -> Iterator[None]:
        """Keep a TCP listener on ``address:port`` in host ``name`` while the block runs.

        The listener exits when its stdin closes, so it cannot outlive this process.
        """
        code = (
            "import socket, sys\n"
            "s = socket.socket()\n"
            "s.bind((sys.argv[1], int(sys.argv[2])))\n"
            "s.listen()\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
        )
        argv = [sys.executable, "-c", code, str(address), str(port)]
        pipe = subprocess.PIPE
        with self.popen(name, argv, stdin=pipe, stdout=pipe, stderr=pipe, text=True) as proc:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            try:
                if proc.stdout.readline().strip() != "ready":
                    proc.wait(timeout=10)
                    detail = proc.stderr.read().strip().splitlines()
                    raise TestbedError(
                        f"{name}: cannot hold {address}:{port}: {detail[-1] if detail else '?'}"
                    )
                yield
            finally:
                proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    # -- fault injection ----------------------------------------------------------------

    def _ip(self, name: str, *args: str) -> None:
        network.run_checked(["ip", "-n", self.host(name).namespace, *args])

    def link_down(self, name: str) -> None:
        """Unplug host ``name``'s direct link (usb0 down)."""
        self._ip(name, "link", "set", LINK_IFACE, "down")

    def set_link_rate(self, rate: str) -> None:
        """Change the htb rate of every host's link (a slower link makes loads last)."""
        if self.spec.link_rate is None or not re.match(RATE_PATTERN, rate):
            raise TestbedError(f"cannot set link rate {rate!r} on an unshaped or with a bad rate")
        for host in self.record.hosts:
            network.run_checked(
                [
                    "tc",
                    "-n",
                    host.namespace,
                    "class",
                    "change",
                    "dev",
                    LINK_IFACE,
                    "parent",
                    "1:",
                    "classid",
                    "1:10",
                    "htb",
                    "rate",
                    rate,
                    "ceil",
                    rate,
                    "quantum",
                    "60000",
                ]
            )

    def link_up(self, name: str) -> None:
        self._ip(name, "link", "set", LINK_IFACE, "up")

    def _link_routes(self, src: str, dst: str) -> list[tuple[str, str, str]]:
        a, b = self.host(src), self.host(dst)
        return [
            (src, f"{b.link_address}/32", str(b.mgmt_address)),
            (dst, f"{a.link_address}/32", str(a.mgmt_address)),
        ]

    def route_link_via_mgmt(self, src: str, dst: str) -> None:
        """Send ``src``'s traffic for ``dst``'s link address over the management network.

        The mistake this simulates: a route that makes RPC traffic take the slow network
        while every address still answers. The reverse route makes replies symmetric.
        """
        for host, prefix, via in self._link_routes(src, dst):
            self._ip(host, "route", "replace", prefix, "via", via, "dev", MGMT_IFACE)

    def undo_route_link_via_mgmt(self, src: str, dst: str) -> None:
        for host, prefix, via in self._link_routes(src, dst):
            argv = ["ip", "-n", self.host(host).namespace, "route", "del", prefix, "via", via]
            network.run_checked(argv, check=False)  # already gone is fine


def create(spec: TestbedSpec) -> Testbed:
    """Build the testbed ``spec`` describes; on any failure, remove what was made."""
    network.require_root_tools(("ip", "tc", "ssh-keygen", "/usr/sbin/sshd"))
    root = spec.root
    for sub in ("client", "hosts", "state"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    layout = network.plan_network(spec.tag, spec.host_names)
    client = root / "client"
    authorized_keys = client / "authorized_keys"
    hosts = []
    for host in layout.hosts:
        host_dir = root / "hosts" / host.name
        hosts.append(
            TestbedHost(
                name=host.name,
                namespace=host.namespace,
                mgmt_address=host.mgmt_address,
                link_address=host.link_address,
                run_dir=host_dir / "run",
                rpc_cache_dir=host_dir / "rpc-cache",
                sshd=plan_sshd(
                    host_dir / "sshd",
                    name=host.name,
                    namespace=host.namespace,
                    address=host.mgmt_address,
                ),
            )
        )
    bed = Testbed(
        TestbedRecord(
            status="creating",
            spec=spec,
            network=layout,
            hosts=tuple(hosts),
            client_key=client / "id_ed25519",
            known_hosts=client / "known_hosts",
            authorized_keys=authorized_keys,
            state_dir=root / "state",
        )
    )
    state_file = root / STATE_FILE
    if state_file.exists() and Testbed.load(root).record.status != "destroyed":
        raise TestbedError(f"{state_file}: a testbed lives here; destroy it first")
    network.claim_tag(layout)  # on failure nothing is ours to tear down
    try:
        bed.save()  # before the rest exists, so a killed run can still be torn down
        _build(bed)
    except BaseException:
        with contextlib.suppress(Exception):
            bed.destroy()
        raise
    log.info("testbed.up", tag=spec.tag, root=str(root), hosts=bed.names)
    return bed


def _build(bed: Testbed) -> None:
    record = bed.record
    shaping = network.build_network(record.network, bed.spec.link_rate, bed.spec.link_delay_ms)
    bed.record = record = record.model_copy(update={"shaping": shaping})
    client_public = generate_key(record.client_key, f"clusterctl-testbed-{bed.tag}")
    record.authorized_keys.write_text(client_public + "\n")
    host_keys = []
    for host in record.hosts:
        host.run_dir.mkdir(parents=True, exist_ok=True)
        host.rpc_cache_dir.mkdir(parents=True, exist_ok=True)
        public_key = prepare_sshd(
            host.sshd, record.authorized_keys, clean_shell=bed.spec.clean_shell
        )
        host_keys.append((host.mgmt_address, public_key))
    record.known_hosts.write_text(known_hosts_text(host_keys))
    started: list[TestbedHost] = []
    for host in record.hosts:
        started.append(host.model_copy(update={"sshd": start_sshd(host.sshd)}))
        rest = record.hosts[len(started) :]
        bed.record = record.model_copy(update={"hosts": (*started, *rest)})
        bed.save()
    bed.record = bed.record.model_copy(update={"status": "up"})
    bed.save()
