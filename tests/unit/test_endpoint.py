"""The endpoint ``up`` prints: one this machine can use, and which kind it is."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from cluster.config.models import Inventory, Profile
from cluster.orchestration.endpoint import Access, served_endpoint, tunnel_argv


def inventory(**head: Any) -> Inventory:
    evo = {
        "transport": "ssh",
        "link_address": "10.0.0.1",
        "link_interface": "usb0",
        "llama_bin_dir": "/opt/llama/bin",
        **head,
    }
    bee = {"link_address": "10.0.0.2", "link_interface": "usb0", "llama_bin_dir": "/opt/bin"}
    return Inventory.model_validate({"cluster": {"head": "evo"}, "hosts": {"evo": evo, "bee": bee}})


def profile(**keys: Any) -> Profile:
    return Profile.model_validate(
        {"name": "p", "model": "/m.gguf", "rpc_hosts": ["bee"], "tensor_split": "1/1", **keys}
    )


def test_an_ssh_head_on_its_loopback_needs_the_complete_tunnel_command(tmp_path: Path) -> None:
    key, known = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    hosts = inventory(
        ssh_target="evo.lan", user="alice", ssh_port=2222, ssh_key=str(key), known_hosts=str(known)
    )
    reach = served_endpoint(hosts, profile(port=18080))
    assert reach.access is Access.TUNNEL
    assert reach.url == "http://127.0.0.1:18080"
    assert reach.tunnel_command == (
        f"ssh -N -L 18080:127.0.0.1:18080 -p 2222 -i {key} "
        f"-o UserKnownHostsFile={known} alice@evo.lan"
    )
    assert reach.explain() == (
        "http://127.0.0.1:18080 is the head's loopback, forwarded to this machine through an "
        f"ssh tunnel; start it first: {reach.tunnel_command}"
    )


def test_the_tunnel_names_only_what_the_inventory_sets() -> None:
    reach = served_endpoint(inventory(), profile(bind_host="localhost", port=8080))
    assert reach.tunnel == ("ssh", "-N", "-L", "8080:localhost:8080", "evo")


def test_a_host_without_host_key_checking_gets_the_same_opt_out() -> None:
    argv = tunnel_argv(inventory(insecure_skip_host_key_check=True).head, 8080)
    assert argv[4:8] == ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]


def test_a_key_path_with_a_space_is_one_word_of_the_command(tmp_path: Path) -> None:
    key = tmp_path / "my keys" / "id"
    command = served_endpoint(inventory(ssh_key=str(key)), profile()).tunnel_command
    assert command is not None and shlex.split(command)[4:6] == ["-i", str(key)]


def test_an_ipv6_loopback_is_bracketed() -> None:
    reach = served_endpoint(inventory(), profile(bind_host="::1", port=9000))
    assert reach.tunnel[3] == "9000:[::1]:9000" and reach.url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("transport", "bind", "url"),
    [
        ("local", "127.0.0.1", "http://127.0.0.1:8080"),
        ("local", "0.0.0.0", "http://127.0.0.1:8080"),
        ("ssh", "192.168.1.5", "http://192.168.1.5:8080"),
        ("ssh", "0.0.0.0", "http://evo.lan:8080"),
        ("ssh", "::", "http://evo.lan:8080"),
    ],
)
def test_reachable_binds_are_direct(transport: str, bind: str, url: str) -> None:
    head: dict[str, Any] = {"transport": transport}
    if transport == "ssh":
        head["ssh_target"] = "evo.lan"
    # A bind beyond the loopback needs an API key (the profile refuses one without).
    keyed = {} if bind == "127.0.0.1" else {"api_key_env": "LLAMA_API_KEY"}
    reach = served_endpoint(inventory(**head), profile(bind_host=bind, **keyed))
    assert (reach.url, reach.access, reach.tunnel) == (url, Access.DIRECT, ())
    assert reach.explain() == f"{url} is reachable directly from this machine"
