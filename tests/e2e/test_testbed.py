"""The namespace testbed itself, proven against the real kernel, sshd, ssh and iperf3.

One two-host testbed serves the tests that only look or that undo what they change; the
lifecycle tests (three hosts, teardown from another process, a failed create) build their
own, alongside it, which also shows that two testbeds do not collide.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.config.loader import load_inventory
from cluster.testbed import bed as bed_module
from cluster.testbed import network
from cluster.testbed.bed import Testbed, TestbedSpec, create
from cluster.testbed.network import TestbedError
from cluster.testbed.tomltext import toml_string

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None or not Path("/usr/sbin/sshd").exists(),
        reason="needs root, iproute2 and openssh-server",
    ),
]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    made = create(TestbedSpec(root=tmp_path_factory.mktemp("bed")))
    try:
        yield made
    finally:
        made.destroy()


def route_dev(bed: Testbed, name: str, address: object) -> str:
    out = bed.exec(name, ["ip", "route", "get", str(address)], capture_output=True, text=True)
    words = out.stdout.split()
    return words[words.index("dev") + 1]


def ping(bed: Testbed, name: str, address: object, wait_s: int = 2) -> bool:
    argv = ["ping", "-c", "1", "-W", str(wait_s), str(address)]
    return bed.exec(name, argv, capture_output=True).returncode == 0


def ours_alive(root: Path, namespaces: dict[str, tuple[int, int]]) -> list[str]:
    """Live processes whose command line names ``root`` or that sit in one of our netns."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ns = (proc / "ns" / "net").stat()
        except OSError:
            continue  # gone, or a zombie (which holds no namespace)
        if str(root) in cmdline or (ns.st_dev, ns.st_ino) in namespaces.values():
            found.append(f"{proc.name}: {cmdline}")
    return found


# -- pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["plain", 'quote " and \\ backslash', "new\nline\ttab", "ctl \x01 \x7f", "ünï ✓ 😀"]
)
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_plan_fits_interface_names_and_is_deterministic() -> None:
    layout = network.plan_network("zz9zz9", ["evo", "averylongname"])
    assert layout == network.plan_network("zz9zz9", ["evo", "averylongname"])
    names = [layout.mgmt_bridge, *(h.mgmt_veth for h in layout.hosts)]
    names += [h.link_port for h in layout.hosts]
    assert all(len(name) <= 15 for name in names)
    assert all(network.STALE_LINK.match(name) for name in layout.root_links)
    assert all(network.STALE_NAMESPACE.match(ns) for ns in layout.namespaces)


def test_spec_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only 2 names"):
        TestbedSpec(root=tmp_path, tag="ab", n_hosts=3, names=("a", "b"))
    with pytest.raises(ValueError, match="not 'link'"):
        TestbedSpec(root=tmp_path, tag="ab", names=("evo", "link"))
    with pytest.raises(ValueError):
        TestbedSpec(root=tmp_path, tag="AB-1")
    with pytest.raises(ValueError):
        TestbedSpec(root=tmp_path, tag="ab", link_rate="1 gbit; reboot")


# -- the two-host testbed -------------------------------------------------------------


@pytest.mark.parametrize("name", ["evo", "bee"])
def test_ssh_with_host_key_checking(bed: Testbed, name: str) -> None:
    out = run(bed.ssh_argv(name, ["ip", "-4", "addr", "show", "usb0"]))
    assert out.returncode == 0, out.stderr
    assert f"inet {bed.host(name).link_address}/24" in out.stdout


def test_unknown_host_key_is_rejected(bed: Testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [arg.replace(str(bed.known_hosts), str(empty)) for arg in bed.ssh_argv("evo", ["true"])]
    out = run(argv)
    assert out.returncode == 255
    assert "Host key verification failed" in out.stderr


def test_changed_host_key_is_rejected(bed: Testbed, tmp_path: Path) -> None:
    # evo's address with bee's key: what a reinstalled or impostor host looks like.
    lines = bed.known_hosts.read_text().splitlines()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{bed.host('evo').mgmt_address} {lines[1].split(' ', 1)[1]}\n")
    argv = [arg.replace(str(bed.known_hosts), str(wrong)) for arg in bed.ssh_argv("evo", ["true"])]
    out = run(argv)
    assert out.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in out.stderr


def test_hosts_talk_over_the_link(bed: Testbed) -> None:
    evo, bee = bed.host("evo"), bed.host("bee")
    assert ping(bed, "evo", bee.link_address)
    assert ping(bed, "bee", evo.link_address)
    assert route_dev(bed, "evo", bee.link_address) == "usb0"
    assert route_dev(bed, "evo", bee.mgmt_address) == "mgmt0"


def test_controller_is_not_on_the_link(bed: Testbed) -> None:
    out = run(["ping", "-c", "1", "-W", "1", str(bed.host("evo").link_address)])
    assert out.returncode != 0


def test_link_is_shaped(bed: Testbed) -> None:
    qdisc = bed.exec("evo", ["tc", "qdisc", "show", "dev", "usb0"], capture_output=True, text=True)
    classes = bed.exec(
        "evo", ["tc", "class", "show", "dev", "usb0"], capture_output=True, text=True
    )
    assert "htb 1: root" in qdisc.stdout
    assert "rate 1Gbit ceil 1Gbit" in classes.stdout
    shaping = bed.record.shaping
    assert shaping is not None
    # The delay needs sch_netem; a kernel without it is reported, not silently ignored.
    assert ("netem" in qdisc.stdout) == shaping.delay_applied


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3")
def test_link_throughput_stays_under_the_rate(bed: Testbed) -> None:
    address = str(bed.host("bee").link_address)
    argv = ["iperf3", "-s", "-1", "-B", address, "-p", "5299"]
    with bed.popen("bee", argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            deadline = time.monotonic() + 10
            listening = ["ss", "-Hltn", "sport", "= :5299"]
            while not bed.exec("bee", listening, capture_output=True, text=True).stdout:
                assert time.monotonic() < deadline, "iperf3 server did not start"
                time.sleep(0.05)
            client = ["iperf3", "-c", address, "-p", "5299", "-t", "2", "-J"]
            out = bed.exec("evo", client, capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stdout[-500:]
            bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
        finally:
            server.kill()
    # Unshaped veths on this kind of box carry tens of Gbit/s; 1gbit caps well below.
    assert 0.2e9 < bps < 1.05e9


def test_route_link_via_mgmt(bed: Testbed) -> None:
    bee_link = bed.host("bee").link_address
    bed.route_link_via_mgmt("evo", "bee")
    try:
        assert route_dev(bed, "evo", bee_link) == "mgmt0"
        assert route_dev(bed, "bee", bed.host("evo").link_address) == "mgmt0"
        assert ping(bed, "evo", bee_link)
    finally:
        bed.undo_route_link_via_mgmt("evo", "bee")
    assert route_dev(bed, "evo", bee_link) == "usb0"
    bed.undo_route_link_via_mgmt("evo", "bee")  # idempotent


def test_link_down_and_up(bed: Testbed) -> None:
    bee_link = bed.host("bee").link_address
    bed.link_down("bee")
    try:
        link = bed.exec("bee", ["ip", "link", "show", "usb0"], capture_output=True, text=True)
        assert "state DOWN" in link.stdout
        assert not ping(bed, "evo", bee_link, wait_s=1)
    finally:
        bed.link_up("bee")
    link = bed.exec("bee", ["ip", "link", "show", "usb0"], capture_output=True, text=True)
    assert "state UP" in link.stdout
    assert ping(bed, "evo", bee_link)


def test_hold_port(bed: Testbed) -> None:
    address = str(bed.host("evo").link_address)
    code = "import socket, sys; socket.socket().bind((sys.argv[1], 50052))"
    probe = [sys.executable, "-c", code, address]
    with bed.hold_port("evo", address, 50052):
        taken = bed.exec("evo", probe, capture_output=True, text=True)
        assert taken.returncode != 0
        assert "Address already in use" in taken.stderr
        # Other namespaces have their own ports.
        assert bed.exec("bee", [*probe[:-1], "0.0.0.0"], capture_output=True).returncode == 0
    assert bed.exec("evo", probe, capture_output=True).returncode == 0


def test_write_inventory(bed: Testbed, tmp_path: Path) -> None:
    bins = {"evo": "/opt/llama rocm/bin", "bee": '/opt/"vk"/bin'}
    extra: dict[str, dict[str, object]] = {"bee": {"memory_budget_gib": 2.5, "rpc_threads": 2}}
    path = bed.write_inventory(tmp_path / "hosts.toml", bins, head="bee", extra=extra)
    inventory = load_inventory(path)
    assert inventory.cluster.head == "bee"
    assert inventory.controller.state_dir == bed.root / "state"
    for name, host in inventory.hosts.items():
        assert host.ssh_target == str(bed.host(name).mgmt_address)
        assert host.link_address == bed.host(name).link_address
        assert host.llama_bin_dir == bins[name]
        assert host.known_hosts == bed.known_hosts
        assert host.run_dir == str(bed.host(name).run_dir)
    assert inventory.hosts["bee"].memory_budget_gib == 2.5
    assert inventory.hosts["evo"].memory_budget_gib is None
    with pytest.raises(TestbedError, match="no bin dir"):
        bed.write_inventory(tmp_path / "x.toml", {"evo": "/bin"})


def test_same_tag_is_refused_without_harm(bed: Testbed, tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="in use"):
        create(TestbedSpec(root=tmp_path, tag=bed.tag))
    assert run(bed.ssh_argv("evo", ["true"])).returncode == 0


# -- lifecycle ------------------------------------------------------------------------


def test_three_hosts_and_teardown_from_another_process(tmp_path: Path) -> None:
    three = create(TestbedSpec(root=tmp_path / "bed3", n_hosts=3))
    try:
        assert three.names == ["evo", "bee", "cat"]
        for name in three.names:
            assert run(three.ssh_argv(name, ["hostname"])).returncode == 0
        assert ping(three, "cat", three.host("evo").link_address)
        namespaces = {ns: (network.NETNS_DIR / ns).stat() for ns in three.record.network.namespaces}
        ns_ids = {ns: (st.st_dev, st.st_ino) for ns, st in namespaces.items()}
        assert Testbed.load(three.root).record == three.record
    except BaseException:
        three.destroy()
        raise
    code = "import sys; from pathlib import Path; from cluster.testbed.bed import Testbed; "
    code += "Testbed.load(Path(sys.argv[1])).destroy()"
    out = run([sys.executable, "-c", code, str(three.root)])
    assert out.returncode == 0, out.stderr
    listed = run(["ip", "netns", "list"]).stdout
    links = run(["ip", "-o", "link", "show"]).stdout
    assert f"ctl-{three.tag}-" not in listed
    assert f"ctl{three.tag}m" not in links
    assert ours_alive(three.root, ns_ids) == []
    assert Testbed.load(three.root).record.status == "destroyed"
    Testbed.load(three.root).destroy()  # idempotent


def test_failed_create_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_sshd(instance: object) -> object:
        raise TestbedError("sshd refused to start (simulated)")

    monkeypatch.setattr(bed_module, "start_sshd", broken_sshd)
    spec = TestbedSpec(root=tmp_path)
    with pytest.raises(TestbedError, match="simulated"):
        create(spec)
    assert network.find_leftovers(spec.tag) == {}
    assert Testbed.load(tmp_path).record.status == "destroyed"


def test_destroy_stale_only_takes_our_names(tmp_path: Path) -> None:
    spec = TestbedSpec(root=tmp_path)
    create(spec)  # abandoned: never destroyed through its object
    removed = network.destroy_stale(spec.tag)
    layout = network.plan_network(spec.tag, spec.host_names)
    assert sorted(removed[spec.tag]) == sorted([*layout.namespaces, *layout.root_links])
    assert network.find_leftovers(spec.tag) == {}


def test_killed_creator_leaves_a_testbed_that_load_can_destroy(tmp_path: Path) -> None:
    # The creating process dies between two sshd starts: status "creating", half built.
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from cluster.testbed import bed\n"
        "real = bed.start_sshd\n"
        "calls = []\n"
        "def start(instance):\n"
        "    calls.append(instance)\n"
        "    if len(calls) == 2:\n"
        "        os._exit(9)\n"
        "    return real(instance)\n"
        "bed.start_sshd = start\n"
        "bed.create(bed.TestbedSpec(root=Path(sys.argv[1])))\n"
    )
    out = run([sys.executable, "-c", code, str(tmp_path)])
    assert out.returncode == 9, out.stderr
    left = Testbed.load(tmp_path)
    assert left.record.status == "creating"
    assert left.record.hosts[0].sshd.pid is not None
    assert network.find_leftovers(left.tag) != {}
    left.destroy()
    assert network.find_leftovers(left.tag) == {}
    assert ours_alive(tmp_path, {}) == []


def test_clean_shell_hosts_skip_the_login_users_bashrc(tmp_path: Path) -> None:
    # bash sources ~/.bashrc for a command over ssh only at shell level 0: a session that
    # starts at SHLVL 1 runs the command at level 2, whatever the user's dotfiles hold.
    for clean, level in ((False, "1"), (True, "2")):
        with create(TestbedSpec(root=tmp_path / str(clean), n_hosts=1, clean_shell=clean)) as bed:
            done = subprocess.run(
                bed.ssh_argv(bed.head, ["echo $SHLVL"]), capture_output=True, text=True, timeout=30
            )
            assert done.stdout.strip() == level, done.stderr
