"""Configuration: strict records, errors that name file and key, precedence of sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from cluster.config.loader import (
    find_config_file,
    load_inventory,
    load_profile,
    resolve_sources,
)
from cluster.config.models import format_split, parse_split
from cluster.config.resolve import devices_for
from cluster.errors import EXIT_CONFIG, ConfigError
from cluster.measure.bench import BenchRequest
from cluster.measure.ceiling import CeilingRequest
from cluster.measure.playbook import ScreenPlaybook
from cluster.sweep.playbook import SweepPlaybook

REPO = Path(__file__).resolve().parent.parent.parent

GOOD_HOSTS = """
[cluster]
head = "evo"

[hosts.evo]
ssh_target = "evo.lan"
link_address = "10.99.0.1"
link_interface = "thunderbolt0"
llama_bin_dir = "/opt/llama/bin"
local_devices = 1

[hosts.bee]
ssh_target = "bee.lan"
link_address = "10.99.0.2"
link_interface = "thunderbolt0"
llama_bin_dir = "/opt/llama/bin"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_shipped_example_and_profiles_load() -> None:
    inventory = load_inventory(REPO / "hosts.example.toml")
    profile = load_profile(REPO / "playbooks", "minimax-q8")
    devices = devices_for(inventory, profile)
    assert [(d.host, d.proportion) for d in devices] == [("bee", 1.2), ("evo", 0.8)]
    assert profile.parallel == 2 and profile.ctx_size == 100000
    assert profile.direct_io and profile.no_warmup and profile.flash_attn == "on"
    assert inventory.hosts["bee"].env == {"ROCBLAS_USE_HIPBLASLT": "1"}


@pytest.mark.parametrize(
    ("mutation", "key", "message"),
    [
        (("rpc_port = 50052", 'rpc_port = "fast"'), "hosts.evo.rpc_port", "valid integer"),
        (
            ("local_devices = 1", "local_devices = 1\ncolour = 'red'"),
            "hosts.evo.colour",
            "unknown key",
        ),
        (
            ('link_address = "10.99.0.2"', 'link_address = "8.8.8.8"'),
            "hosts.bee.link_address",
            "not a private link address",
        ),
        (('head = "evo"', 'head = "cat"'), "cluster.head", "'cat' is not a host (hosts: bee, evo)"),
        (
            ('link_address = "10.99.0.2"', 'link_address = "10.99.0.1"'),
            "hosts.bee.link_address",
            "also evo's link endpoint",
        ),
        (('ssh_target = "bee.lan"\n', ""), None, None),
    ],
)
def test_bad_hosts_file_names_file_and_key(
    tmp_path: Path, mutation: tuple[str, str], key: str | None, message: str | None
) -> None:
    text = GOOD_HOSTS.replace("llama_bin_dir", "rpc_port = 50052\nllama_bin_dir", 1)
    text = text.replace(*mutation)
    path = write(tmp_path, "hosts.toml", text)
    if key is None:
        load_inventory(path)  # ssh_target is optional: the table key is the ssh target
        return
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert f": {key}: " in line
    assert message in line
    assert info.value.exit_code == EXIT_CONFIG


def test_toml_syntax_error_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.toml", "[cluster\nhead = 'evo'\n")
    with pytest.raises(ConfigError, match=r"hosts.toml: not valid TOML: .*line 1"):
        load_inventory(path)


def test_local_transport_rejects_ssh_keys(tmp_path: Path) -> None:
    text = GOOD_HOSTS.replace('ssh_target = "evo.lan"', 'transport = "local"\nuser = "me"')
    with pytest.raises(ConfigError, match="user only apply to transport = 'ssh'"):
        load_inventory(write(tmp_path, "hosts.toml", text))


def test_profile_errors(tmp_path: Path) -> None:
    playbooks = tmp_path / "playbooks"
    inventory = load_inventory(write(tmp_path, "hosts.toml", GOOD_HOSTS))
    write(playbooks, "comma.toml", 'model = "/m.gguf"\nrpc_hosts = ["bee"]\ntensor_split = "5,5"\n')
    with pytest.raises(ConfigError, match=r"comma.toml: tensor_split: .*uses ','"):
        load_profile(playbooks, "comma")
    write(
        playbooks, "three.toml", 'model = "/m.gguf"\nrpc_hosts = ["bee"]\ntensor_split = "1/1/1"\n'
    )
    with pytest.raises(
        ConfigError,
        match=r"tensor_split: split 1/1/1 has 3 entries but the cluster has 2 devices \(RPC0 on bee, evo-gpu0 on evo\)",
    ):
        devices_for(inventory, load_profile(playbooks, "three"))
    write(playbooks, "ghost.toml", 'model = "/m.gguf"\nrpc_hosts = ["cat"]\ntensor_split = "1/1"\n')
    with pytest.raises(ConfigError, match=r"rpc_hosts: host 'cat' is not in the inventory"):
        devices_for(inventory, load_profile(playbooks, "ghost"))
    write(
        playbooks,
        "clash.toml",
        'model = "/m.gguf"\nrpc_hosts = ["bee"]\ntensor_split = "1/1"\nextra_args = ["-ts", "3/1"]\n',
    )
    with pytest.raises(ConfigError, match=r"extra_args: .*-ts are set by the profile's own keys"):
        load_profile(playbooks, "clash")
    with pytest.raises(ConfigError, match=r"no profile named 'nope' \(profiles there: .*comma"):
        load_profile(playbooks, "nope")


def test_split_spellings() -> None:
    assert parse_split("1.2/0.8") == [1.2, 0.8]
    assert parse_split([1, 1, 2]) == [1.0, 1.0, 2.0]
    assert format_split([1.2, 0.8]) == "1.2/0.8"
    for bad in ("", "a/b", "-1/2", "0/0", "5,5"):
        with pytest.raises(ValueError):
            parse_split(bad)
    for infinite in ("inf/1", "1/nan", "-inf/3", [float("inf"), 1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="finite numbers"):
            parse_split(infinite)


@pytest.mark.parametrize(
    ("model", "data", "key"),
    [
        (BenchRequest, {"stall_timeout_s": float("inf")}, "stall_timeout_s"),
        (CeilingRequest, {"shape": "opt", "factor": float("nan")}, "factor"),
        (SweepPlaybook, {"name": "s", "profile": "p", "grid_step": float("inf")}, "grid_step"),
        (ScreenPlaybook, {"name": "s", "configs": [], "request_timeout_s": float("nan")}, None),
    ],
)
def test_every_record_refuses_inf_and_nan(
    model: type[BaseModel], data: dict[str, object], key: str | None
) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(data)
    finite = [e for e in raised.value.errors() if e["type"] == "finite_number"]
    assert finite, raised.value.errors()
    if key is not None:
        assert finite[0]["loc"] == (key,)


def test_nul_is_refused_in_nested_values(tmp_path: Path) -> None:
    text = GOOD_HOSTS.replace(
        "local_devices = 1", 'local_devices = 1\nenv = { OK = "fine", BAD = "a\\u0000b" }'
    )
    with pytest.raises(ConfigError) as raised:
        load_inventory(write(tmp_path, "hosts.toml", text))
    assert str(raised.value).endswith(r"hosts.evo.env: contains a NUL character (\u0000)")


def test_a_link_to_nowhere_is_named(tmp_path: Path) -> None:
    playbooks = tmp_path / "pb"
    playbooks.mkdir()
    (playbooks / "gone.toml").symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(ConfigError) as raised:
        load_profile(playbooks, "gone")
    assert str(raised.value) == (
        f"{playbooks / 'gone.toml'}: a link to {tmp_path / 'elsewhere.toml'}, which does not exist"
    )


def test_tilde_is_expanded_by_flags_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    text = GOOD_HOSTS + '\n[controller]\nstate_dir = "~/st"\nplaybooks_dir = "~/pb"\n'
    text = text.replace('ssh_target = "evo.lan"', 'ssh_target = "evo.lan"\nssh_key = "~/k"')
    config_file = write(tmp_path, "c/hosts.toml", text)
    inventory = load_inventory(config_file)
    assert inventory.hosts["evo"].ssh_key == home / "k"
    sources = resolve_sources(inventory, config_file, environ={})
    assert (sources.state_dir, sources.playbooks_dir) == (home / "st", home / "pb")
    sources = resolve_sources(
        inventory, config_file, environ={"CLUSTERCTL_PLAYBOOKS": "~/e"}, state_dir_flag=Path("~/f")
    )
    assert (sources.state_dir, sources.playbooks_dir) == (home / "f", home / "e")
    assert find_config_file(Path("~/h.toml"), {}, tmp_path, home) == home / "h.toml"
    assert find_config_file(None, {"CLUSTERCTL_CONFIG": "~/x.toml"}, tmp_path, home) == (
        home / "x.toml"
    )
    with pytest.raises(ConfigError, match=r"^--state-dir: cannot expand ~ in '~nosuchuser9/x'"):
        resolve_sources(inventory, config_file, environ={}, state_dir_flag=Path("~nosuchuser9/x"))


def test_config_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    user_file = write(home, ".config/clusterctl/hosts.toml", GOOD_HOSTS)
    cwd.mkdir()
    assert find_config_file(None, {}, cwd, home) == user_file
    local = write(cwd, "hosts.toml", GOOD_HOSTS)
    assert find_config_file(None, {}, cwd, home) == local
    env_file = tmp_path / "env.toml"
    assert find_config_file(None, {"CLUSTERCTL_CONFIG": str(env_file)}, cwd, home) == env_file
    flag = tmp_path / "flag.toml"
    assert find_config_file(flag, {"CLUSTERCTL_CONFIG": str(env_file)}, cwd, home) == flag
    with pytest.raises(ConfigError, match=r"no hosts\.toml found"):
        find_config_file(None, {}, tmp_path / "empty", tmp_path / "nohome")

    text = GOOD_HOSTS + '\n[controller]\nstate_dir = "st"\nplaybooks_dir = "/pb"\n'
    inventory = load_inventory(write(tmp_path, "c/hosts.toml", text))
    config_file = tmp_path / "c" / "hosts.toml"
    sources = resolve_sources(inventory, config_file, environ={}, home=home)
    assert sources.state_dir == tmp_path / "c" / "st"
    assert sources.playbooks_dir == Path("/pb")
    sources = resolve_sources(
        inventory, config_file, environ={"CLUSTERCTL_STATE_DIR": "/e"}, home=home
    )
    assert sources.state_dir == Path("/e")
    sources = resolve_sources(
        inventory,
        config_file,
        state_dir_flag=Path("/f"),
        environ={"CLUSTERCTL_STATE_DIR": "/e"},
        home=home,
    )
    assert sources.state_dir == Path("/f")
    plain = load_inventory(write(tmp_path, "d/hosts.toml", GOOD_HOSTS))
    sources = resolve_sources(plain, tmp_path / "d" / "hosts.toml", environ={}, home=home)
    assert sources.state_dir == home / ".local/state/clusterctl"
    assert sources.playbooks_dir == tmp_path / "d" / "playbooks"


def test_api_key_comes_from_the_named_variable_and_stays_secret(tmp_path: Path) -> None:
    playbooks = tmp_path / "pb"
    write(
        playbooks,
        "k.toml",
        'model = "/m"\nrpc_hosts = []\ntensor_split = "1"\napi_key_env = "MY_KEY"\n',
    )
    profile = load_profile(playbooks, "k")
    for unset in ({}, {"MY_KEY": ""}):
        with pytest.raises(ConfigError, match="api_key_env: names the environment variable MY_KEY"):
            profile.api_key(unset)
    secret = profile.api_key({"MY_KEY": "hunter2"})
    assert secret is not None and secret.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(secret)


def test_the_build_table_is_checked(tmp_path: Path) -> None:
    base = (Path(__file__).resolve().parents[2] / "hosts.example.toml").read_text()
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(base.replace('# build_host = "evo"', 'build_host = "nope"'))
    with pytest.raises(ConfigError, match=r"build.build_host: 'nope' is not a host"):
        load_inventory(hosts)
    hosts.write_text(base.replace('"-DAMDGPU_TARGETS=gfx1151"', '"; rm -rf /"'))
    with pytest.raises(ConfigError, match=r"build.cmake_options: .* is not a CMake option"):
        load_inventory(hosts)
    hosts.write_text(base)
    build = load_inventory(hosts).build
    assert build.backend == "hip" and build.cmake_options == ["-DAMDGPU_TARGETS=gfx1151"]
    assert build.recipe().cache_name.startswith("0.3.36-hip-")


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ('bind_host = "0.0.0.0"\n', "bind_host 0.0.0.0 exposes llama-server"),
        ('bind_host = "10.0.0.5"\n', "bind_host 10.0.0.5 exposes llama-server"),
        ('bind_host = "0.0.0.0"\napi_key_env = "K"\n', None),
        ('bind_host = "0.0.0.0"\nallow_unauthenticated = true\n', None),
        ('bind_host = "127.0.0.2"\n', None),
        ('extra_args = ["--api-key", "x"]\n', "--api-key are set by the profile's own keys"),
    ],
)
def test_llama_server_is_not_exposed_without_a_key(
    tmp_path: Path, keys: str, error: str | None
) -> None:
    playbooks = tmp_path / "pb"
    write(playbooks, "p.toml", 'model = "/m"\nrpc_hosts = []\ntensor_split = "1"\n' + keys)
    if error is None:
        profile = load_profile(playbooks, "p")
        assert profile.exposed == ("allow_unauthenticated" in keys)
    else:
        with pytest.raises(ConfigError, match=error):
            load_profile(playbooks, "p")
