"""The sanitizer on a realistic record: host and profile dumps as the sweep job writes them,
attempts with builds and log tails, failures' evidence. Nothing of the user's setup may be
left; splits, numbers, shapes and builds must be."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.config.models import HostConfig, Profile
from cluster.report.sanitize import Sanitizer
from cluster.report.tables import run_document
from cluster.store import Run, Store

MODEL_DIR = "/home/alice/models/minimax"
MODEL = f"{MODEL_DIR}/MiniMax-Q8.gguf"
HOSTS = [
    HostConfig(
        name="evo",
        ssh_target="evo.tail4e2a1.ts.net",
        user="alice",
        ssh_key=Path("/home/alice/.ssh/id_ed25519_cluster"),
        known_hosts=Path("/home/alice/.ssh/known_hosts_cluster"),
        link_address="10.77.0.1",
        link_interface="thunderbolt0",
        llama_bin_dir="/opt/llama-hip/build/bin",
        command_prefix=["toolbox", "run", "-c", "llama-rocm", "--"],
        env={"HSA_OVERRIDE_GFX_VERSION": "11.5.1", "HF_TOKEN": "hf_qWeRtYuIoP0987654321"},
        run_dir="/srv/clusterctl-state/evo",
        rpc_cache_dir="/mnt/nvme0/rpc-cache",
    ),
    HostConfig(
        name="bee",
        ssh_target="bob@192.168.1.21",
        ssh_port=2222,
        ssh_key=Path("~/.ssh/id_bee"),  # recorded expanded: this machine's home
        link_address="10.77.0.2",
        link_interface="thunderbolt0",
        llama_bin_dir="/var/home/bob/src/llama.cpp/build/bin",
        rpc_cache_dir="~/.cache/llama.cpp/rpc",  # a path on bee: recorded as written
    ),
]
PROFILE = Profile(
    name="minimax-q8",
    model=MODEL,
    rpc_hosts=["bee", "evo"],  # bee's share comes first in a split
    tensor_split=[1.0, 1.0],
    ctx_size=100000,
    parallel=2,
    flash_attn="on",
    extra_args=["--mmproj", "/data/vision/mmproj-F16.gguf", "--slot-save-path", "/data/slots"],
)
BUILDS = {
    "evo": {
        "commit": "0c1e570",
        "rpc_binary": "/opt/llama-hip/build/bin/rpc-server",
        "rpc_protocol": "3.0.0",
    },
    "bee": {
        "commit": "0c1e570",
        "rpc_binary": "/var/home/bob/src/llama.cpp/build/bin/rpc-server",
        "rpc_protocol": "3.0.0",
    },
    "gnu": {"commit": "b4721", "rpc_binary": "rpc-server", "rpc_protocol": "2.0.0"},
}
EVIDENCE = (
    "llama-server@evo: RPC connection to 10.77.0.2:50052 dropped after 1.8s "
    "(recv failed: Connection reset by peer) while loading /home/alice/models/minimax/"
    "MiniMax-Q8.gguf; route via fe80::1c2b:3aff:fe4d:5e6f%thunderbolt0 and [fd00::2]:50052"
)
TAILS = {
    "llama-server@evo": (
        "main: loading model from /home/alice/models/minimax/MiniMax-Q8.gguf\n"
        "ggml_cuda_init: found 1 ROCm devices\nsrv: listening on http://127.0.0.1:8080\n"
    ),
    "rpc-server@bee": (
        "Starting RPC server on 10.77.0.2:50052 as bob on bee.lan\n"
        "cache dir /var/home/bob/.cache/llama.cpp/rpc/\nmac 3c:7c:3f:aa:01:9e\n"
    ),
    "rpc-server@gnu": "accepted client from 10.77.0.1 (ssh alice@evo.tail4e2a1.ts.net)\n",
}
SENSITIVE = [
    "evo",
    "bee",
    "gnu",  # only the builds and a log tail name it
    "alice",
    "bob",
    "10.77.0.1",
    "10.77.0.2",
    "192.168.1.21",
    "127.0.0.1",
    "fe80::1c2b:3aff:fe4d:5e6f",
    "fd00::2",
    "3c:7c:3f:aa:01:9e",
    "tail4e2a1",
    "ts.net",
    "/home/",
    "/var/home",
    "~/",
    "id_ed25519_cluster",
    "known_hosts_cluster",
    "id_bee",
    "llama-hip",
    "clusterctl-state",
    "nvme0",
    "rpc-cache",
    "models/minimax",
    "/data/",
    "vision",
]
KEPT = [
    "1.2/0.8",
    "0c1e570",
    "b4721",
    "3.0.0",
    "11.5.1",
    "71.3 GiB",
    "MiniMax-Q8.gguf",
    "mmproj-F16.gguf",
    "thunderbolt0",
    "50052",
    "natural",
    "100000",
    "minimax-q8",
    "ROCm",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state") as s:
        yield s


@pytest.fixture
def run_id(store: Store) -> int:
    config = {
        "sweep": {"name": "minimax-split", "profile": "minimax-q8"},
        "profile": PROFILE.model_dump(mode="json"),
        "hosts": {host.name: host.model_dump(mode="json") for host in HOSTS},
        "objective": {"metric": "tg_tps", "weights": None},
    }
    run_id = store.start_run("sweep", "minimax-q8", config)
    attempt = store.start_attempt(run_id, 1, "1.2/0.8", {})
    store.finish_attempt(
        attempt,
        "failed",
        failure_class="transport_drop",
        evidence=EVIDENCE,
        log_tails=TAILS,
        builds=BUILDS,
    )
    spec = {"split": "1.2/0.8", "proportions": [1.2, 0.8], "shape": "natural", "target": 512}
    store.record_result(
        run_id,
        "split=1.2/0.8",
        "fail",
        spec=spec,
        metrics={"load_seconds": None, "objective": None},
        failure_class="transport_drop",
        evidence=EVIDENCE,
        log_tails=TAILS,
    )
    store.record_result(
        run_id,
        "split=1.6/0.4",
        "pruned",
        spec={**spec, "split": "1.6/0.4"},
        evidence="needs 71.3 GiB on evo, has 64.0 GiB",
    )
    store.event(run_id, "point", host="evo", address="10.77.0.1", path=MODEL)
    return run_id


def document(store: Store, run_id: int) -> dict[str, Any]:
    run = store.run(run_id)
    assert run is not None
    return run_document(run, store.results(run_id), store.attempts(run_id), store.events(run_id))


def sanitized(store: Store, run_id: int) -> str:
    run = store.run(run_id)
    assert run is not None
    sanitizer = Sanitizer.for_run(run, store.attempts(run_id), store.results(run_id))
    return json.dumps(sanitizer.data(document(store, run_id)))


def test_the_record_holds_the_sensitive_strings_to_begin_with(store: Store, run_id: int) -> None:
    """The check below would be empty if the record never held them."""
    raw = json.dumps(document(store, run_id))
    for secret in SENSITIVE:
        assert secret in raw, secret
    # A secret never got that far: the store redacts it when it records the config.
    assert "hf_qWeRtYuIoP0987654321" not in raw and '"HF_TOKEN": "***"' in raw


def test_no_sensitive_string_is_left(store: Store, run_id: int) -> None:
    text = sanitized(store, run_id)
    for secret in SENSITIVE:
        assert secret not in text, secret
    assert socket.gethostname() not in text  # the controller's own name


def test_keeps_what_a_reader_needs(store: Store, run_id: int) -> None:
    text = sanitized(store, run_id)
    for kept in KEPT:
        assert kept in text, kept
    data = json.loads(text)
    assert data["run"]["config"]["profile"]["model"] == "<models>/MiniMax-Q8.gguf"
    assert data["run"]["config"]["profile"]["tensor_split"] == [1.0, 1.0]
    assert data["results"][0]["spec"]["proportions"] == [1.2, 0.8]
    assert data["results"][1]["evidence"] == "needs 71.3 GiB on host2, has 64.0 GiB"


def test_hosts_are_numbered_in_split_order_and_keys_are_sanitized(
    store: Store, run_id: int
) -> None:
    data = json.loads(sanitized(store, run_id))
    hosts = data["run"]["config"]["hosts"]
    assert list(hosts) == ["host2", "host1"]  # the inventory order; bee is first in rpc_hosts
    assert hosts["host1"]["name"] == "host1"
    assert hosts["host1"]["ssh_target"] == "<user>@<addr>"
    assert hosts["host2"]["ssh_target"] == "host2"
    assert hosts["host2"]["ssh_key"] == "<ssh-key>"
    assert hosts["host2"]["known_hosts"] == "<known-hosts>"
    assert hosts["host2"]["llama_bin_dir"] == "<bin-dir>"
    assert hosts["host2"]["run_dir"] == "<run-dir>"
    assert hosts["host2"]["rpc_cache_dir"] == "<cache-dir>"
    assert hosts["host2"]["link_address"] == "<addr>"
    assert hosts["host2"]["env"] == {"HSA_OVERRIDE_GFX_VERSION": "11.5.1", "HF_TOKEN": "***"}
    assert data["run"]["config"]["profile"]["rpc_hosts"] == ["host1", "host2"]
    builds = data["attempts"][0]["builds"]
    assert builds == {
        "host2": {
            "commit": "0c1e570",
            "rpc_binary": "<bin-dir>/rpc-server",
            "rpc_protocol": "3.0.0",
        },
        "host1": {
            "commit": "0c1e570",
            "rpc_binary": "<bin-dir>/rpc-server",
            "rpc_protocol": "3.0.0",
        },
        "host3": {"commit": "b4721", "rpc_binary": "rpc-server", "rpc_protocol": "2.0.0"},
    }
    assert sorted(data["results"][0]["log_tails"]) == [
        "llama-server@host2",
        "rpc-server@host1",
        "rpc-server@host3",
    ]


def test_evidence_line_in_full(store: Store, run_id: int) -> None:
    data = json.loads(sanitized(store, run_id))
    assert data["results"][0]["evidence"] == (
        "llama-server@host2: RPC connection to <addr>:50052 dropped after 1.8s "
        "(recv failed: Connection reset by peer) while loading <models>/MiniMax-Q8.gguf; "
        "route via <addr> and [<addr>]:50052"
    )


def sanitizer_for(**config: Any) -> Sanitizer:
    run = Run(
        id=1,
        kind="sweep",
        profile="p",
        status="ok",
        started_at=0.0,
        finished_at=None,
        config=config,
        summary={},
    )
    return Sanitizer.for_run(run)


TWO_HOSTS = {
    "profile": {"rpc_hosts": ["evo", "bee"], "model": "/models/x/MiniMax-Q8.gguf"},
    "hosts": {
        "evo": {"name": "evo", "user": "alice", "llama_bin_dir": "/opt/llama/bin"},
        "bee": {"name": "bee", "llama_bin_dir": "/opt/llama/bin", "run_dir": "run"},
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Word boundaries: a short host name inside other words stays.
        ("evolution of a beehive on evo", "evolution of a beehive on host1"),
        ("rpc-server@bee, evo's share", "rpc-server@host2, host1's share"),
        (
            "running with run dir run/ and bin /opt/llama/bin/",
            "running with run dir <run-dir>/ and bin <bin-dir>/",
        ),
        ("/models/x/MiniMax-Q8.gguf", "<models>/MiniMax-Q8.gguf"),
        (
            "-m ./weights/MiniMax-Q8-00001-of-00003.gguf",
            "-m <models>/MiniMax-Q8-00001-of-00003.gguf",
        ),
        ("/home/carol/llama.cpp/ggml/src/ggml.c:123", "<home>/llama.cpp/ggml/src/ggml.c:123"),
        (
            "/Users/dan/x and /root/.cache and ~/.ssh/id and ~erin/notes",
            "<home>/x and <home>/.cache and <home>/.ssh/id and <home>/notes",
        ),
        ("took ~190 s, 5/10 points", "took ~190 s, 5/10 points"),
        (
            "/usr/lib/libamdhip64.so /proc/meminfo /opt/rocm/lib",
            "/usr/lib/libamdhip64.so /proc/meminfo /opt/rocm/lib",
        ),
        ("saved to /data/slots/a.bin", "saved to <path>/a.bin"),
        ("http://192.168.0.5:8080/completion", "http://<addr>:8080/completion"),
        ("12:34:56 std::vector 2001:db8::7 ::1", "12:34:56 std::vector <addr> <addr>"),
        (
            "split 1.2/0.8 at 15.35 t/s, version 0.5.0-dev (build 1, commit 0c1e570)",
            "split 1.2/0.8 at 15.35 t/s, version 0.5.0-dev (build 1, commit 0c1e570)",
        ),
        ("mail alice@example.com or alice", "mail <email> or <user>"),
    ],
)
def test_text(text: str, expected: str) -> None:
    assert sanitizer_for(**TWO_HOSTS).text(text) == expected


def test_text_is_idempotent_and_stable() -> None:
    sanitizer = sanitizer_for(**TWO_HOSTS)
    line = "llama-server@evo loaded /models/x/MiniMax-Q8.gguf from 10.0.0.1 for alice"
    once = sanitizer.text(line)
    assert once == "llama-server@host1 loaded <models>/MiniMax-Q8.gguf from <addr> for <user>"
    assert sanitizer.text(once) == once
    assert sanitizer_for(**TWO_HOSTS).hosts == sanitizer.hosts


def test_an_alias_never_names_a_real_host() -> None:
    """A host really called host1 must not meet another host's stand-in."""
    sanitizer = sanitizer_for(profile={"rpc_hosts": ["evo", "host1"]}, hosts={})
    assert sanitizer.hosts["evo"] != "host1"
    assert sanitizer.hosts["host1"] != "host1"
    text = sanitizer.text("evo and host1")
    assert "evo" not in text
    assert sanitizer.text(text) == text


def test_data_sanitizes_keys_and_leaves_other_values() -> None:
    sanitizer = sanitizer_for(**TWO_HOSTS)
    data = {"evo": {"at": 1.5, "ok": True, "none": None, "paths": ("/models/x/a.gguf",)}}
    assert sanitizer.data(data) == {
        "host1": {"at": 1.5, "ok": True, "none": None, "paths": ["<models>/a.gguf"]}
    }
