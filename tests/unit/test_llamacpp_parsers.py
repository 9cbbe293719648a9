"""llama.cpp knowledge: parsers checked against real outputs of both builds, argv builders.

``tests/fixtures/llamacpp/<parser>/<case>.txt`` holds a real output captured from the
current (0.3.36) or legacy (0.3.30) build (or a synthetic one, marked so), and the
``<case>.json`` beside it says how it was captured and what the parse must give. One
parametrized test walks them all (pyinfra's facts tests).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from cluster.config.models import HostConfig, Profile
from cluster.llamacpp.capabilities import (
    Capabilities,
    build_capabilities,
    direct_io_args_from_help,
    flash_attn_style,
    parse_rpc_banner,
    parse_server_help,
    parse_version,
    pick_rpc_binary,
    rpc_protocols_compatible,
    verbose_args_from_help,
)
from cluster.llamacpp.commands import (
    MissingCapabilityError,
    UnsafeBindError,
    llama_server_argv,
    redact,
    rpc_server_argv,
    rpc_server_env,
)
from cluster.llamacpp.logs import FailureClass, LoadProgress, Phase, classify

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "llamacpp"
CASES = sorted(FIXTURES.glob("*/*.json"))


def read_text(path: Path) -> str:
    # Real logs hold invalid UTF-8 (a random model's output); transports decode the same way.
    return path.read_bytes().decode("utf-8", "replace")


def check_version(text: str, expected: dict[str, Any], args: dict[str, Any]) -> None:
    assert asdict(parse_version(text)) == expected


def check_help(text: str, expected: dict[str, Any], args: dict[str, Any]) -> None:
    flags = parse_server_help(text)
    if "flags" in expected:
        assert sorted(flags) == expected["flags"]
        return
    assert len(flags) == expected["flag_count"]
    assert set(expected["includes"]) <= flags
    assert not set(expected["excludes"]) & flags
    assert list(direct_io_args_from_help(flags)) == expected["direct_io_args"]
    assert list(verbose_args_from_help(flags)) == expected["verbose_args"]
    assert flash_attn_style(text) == expected["flash_attn"]


def check_rpc_banner(text: str, expected: dict[str, Any], args: dict[str, Any]) -> None:
    if "error" in expected:
        with pytest.raises(ValueError):
            parse_rpc_banner(text)
        return
    assert asdict(parse_rpc_banner(text)) == expected


def _fed(text: str, size: int) -> LoadProgress:
    progress = LoadProgress()
    last = 0
    for start in range(0, len(text), size):
        progress.feed(text[start : start + size])
        assert progress.progress_marks >= last, "progress_marks went backwards"
        last = progress.progress_marks
    return progress


def _summary(progress: LoadProgress) -> dict[str, Any]:
    fatal = progress.fatal
    return {
        "phase": progress.phase.value,
        "ready": progress.ready,
        "progress_marks": progress.progress_marks,
        "dots": progress.dots,
        "rpc_devices": progress.rpc_devices,
        "model_buffers": progress.model_buffers,
        "kv_buffers": progress.kv_buffers,
        "compute_buffers": progress.compute_buffers,
        "rpc_model_mib": progress.rpc_model_mib(),
        "load_mode": progress.load_mode,
        "offloaded_layers": list(progress.offloaded_layers) if progress.offloaded_layers else None,
        "listening": progress.listening,
        "fatal": fatal.cls.value if fatal else None,
    }


def check_load_log(text: str, expected: dict[str, Any], args: dict[str, Any]) -> None:
    whole = _summary(_fed(text, max(1, len(text))))
    assert {key: whole[key] for key in expected} == expected
    # Chunks split lines (and dot runs) anywhere; the result must not depend on where.
    for size in (7, 4096):
        assert _summary(_fed(text, size)) == whole


def check_classify(text: str, expected: dict[str, Any], args: dict[str, Any]) -> None:
    result = classify(
        args["exit_status"],
        args["signal"],
        text,
        hung=args["hung"],
        timed_out=args["timed_out"],
    )
    assert result.cls.value == expected["cls"], result
    if expected["evidence_contains"] is None:
        assert result.evidence_line is None
    else:
        assert result.evidence_line is not None
        assert expected["evidence_contains"] in result.evidence_line


CHECKS: dict[str, Callable[[str, dict[str, Any], dict[str, Any]], None]] = {
    "version": check_version,
    "help": check_help,
    "rpc_banner": check_rpc_banner,
    "load_log": check_load_log,
    "classify": check_classify,
}


@pytest.mark.parametrize("case", CASES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_fixture(case: Path) -> None:
    meta = json.loads(case.read_text())
    CHECKS[case.parent.name](
        read_text(case.with_suffix(".txt")), meta["expected"], meta.get("args", {})
    )


def test_fixture_set_is_complete() -> None:
    assert {case.parent.name for case in CASES} == set(CHECKS)
    for case in CASES:
        meta = json.loads(case.read_text())
        assert case.with_suffix(".txt").exists(), case
        # Only what a CPU cannot provoke may be made up, and it must say so.
        assert meta["synthetic"] == (meta["build"] is None), case
    classes = {
        json.loads(c.read_text())["expected"]["cls"] for c in FIXTURES.glob("classify/*.json")
    }
    assert classes >= {cls.value for cls in FailureClass}
    for parser in ("version", "help", "rpc_banner", "load_log", "classify"):
        builds = {json.loads(c.read_text())["build"] for c in FIXTURES.glob(f"{parser}/*.json")}
        assert any(b and b.startswith("0.3.36") for b in builds), parser
        if parser != "version":
            assert any(b and b.startswith("0.3.30") for b in builds), parser


# ---------------------------------------------------------------- capabilities


def capabilities(generation: str) -> Capabilities:
    """Capabilities of a real build, from its captured help, version and banner."""
    prefix = "current" if generation == "current" else "legacy"
    rpc = "ggml-rpc-server" if generation == "current" else "rpc-server"
    return build_capabilities(
        server_help=read_text(FIXTURES / f"help/{prefix}-llama-server.txt"),
        version_text=read_text(FIXTURES / f"version/{prefix}-llama-server.txt"),
        bin_names=["llama-server", "llama-bench", rpc, "libggml-rpc.so"],
        rpc_banner=read_text(FIXTURES / f"rpc_banner/{prefix}-plain.txt"),
    )


CURRENT = capabilities("current")
LEGACY = capabilities("legacy")


def test_capabilities_of_both_builds() -> None:
    assert (CURRENT.rpc_binary, CURRENT.direct_io_args, CURRENT.rpc_protocol, CURRENT.commit) == (
        "ggml-rpc-server",
        ("--load-mode", "dio"),
        "7.0.0",
        "0c1e570",
    )
    assert (LEGACY.rpc_binary, LEGACY.direct_io_args, LEGACY.rpc_protocol, LEGACY.commit) == (
        "rpc-server",
        ("-dio",),
        "4.0.1",
        "e3a74b2",
    )
    assert CURRENT.verbose_args == LEGACY.verbose_args == ("-lv", "4")


def test_build_capabilities_refuses_a_bin_dir_without_rpc_server() -> None:
    with pytest.raises(ValueError, match="no RPC server binary"):
        build_capabilities(
            server_help=read_text(FIXTURES / "help/current-llama-server.txt"),
            version_text="version: 1 (e3a74b2)",
            bin_names=["llama-server"],
        )


def test_pick_rpc_binary_prefers_the_current_name() -> None:
    assert pick_rpc_binary(["rpc-server", "ggml-rpc-server"]) == "ggml-rpc-server"
    assert pick_rpc_binary(["llama-server", "rpc-server"]) == "rpc-server"
    assert pick_rpc_binary(["llama-server", "rpc-server.old"]) is None


@pytest.mark.parametrize(
    ("client", "server", "ok"),
    [
        ("7.0.0", "7.0.0", True),
        ("7.0.0", "7.0.9", True),  # patch is not compared
        ("7.1.0", "7.0.0", True),  # an older minor on the server is accepted
        ("7.0.0", "7.1.0", False),  # a newer minor on the server is refused
        ("7.0.0", "4.0.1", False),  # the observed mismatch
        ("4.0.1", "7.0.0", False),
    ],
)
def test_rpc_protocol_rule(client: str, server: str, ok: bool) -> None:
    assert rpc_protocols_compatible(client, server) is ok


def test_flash_attn_switch_style_of_older_builds() -> None:
    old = "-fa,   --flash-attn                     enable Flash Attention (default: disabled)\n"
    assert flash_attn_style(old) == "switch"
    assert flash_attn_style("-c, --ctx-size N   size\n") == "none"


# ---------------------------------------------------------------- argv builders


def host(**overrides: Any) -> HostConfig:
    fields: dict[str, Any] = {
        "name": "bee",
        "transport": "local",
        "link_address": "10.99.0.2",
        "link_interface": "thunderbolt0",
        "rpc_port": 50252,
        "llama_bin_dir": "/opt/llama/bin/",
    }
    fields.update(overrides)
    return HostConfig(**fields)


def profile(**overrides: Any) -> Profile:
    fields: dict[str, Any] = {
        "name": "tiny",
        "model": "/models/tiny.gguf",
        "rpc_hosts": ["bee", "evo"],
        "tensor_split": "1.2/0.8",
        "ctx_size": 8192,
        "parallel": 2,
        "flash_attn": "on",
        "port": 18250,
    }
    fields.update(overrides)
    return Profile(**fields)


ENDPOINTS = ["10.99.0.2:50252", "10.99.0.1:50252"]


def server_argv(caps: Capabilities, **kwargs: Any) -> list[str]:
    prof = kwargs.pop("prof", profile())
    return llama_server_argv(
        prof,
        kwargs.pop("endpoints", ENDPOINTS),
        kwargs.pop("split", prof.tensor_split),
        caps,
        head=kwargs.pop("head", host(name="evo", link_address="10.99.0.1")),
        model_path=prof.model,
        api_key_file=kwargs.pop("api_key_file", None),
    )


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_rpc_server_argv_prefix_devices_threads_cache() -> None:
    toolbox = ["toolbox", "run", "-c", "llama-rocm", "--"]
    bee = host(command_prefix=toolbox, rpc_devices=["ROCm0", "ROCm1"], rpc_threads=8)
    argv = rpc_server_argv(bee, CURRENT, cache=True)
    assert argv == [
        *toolbox,
        "stdbuf",
        "-oL",
        "/opt/llama/bin/ggml-rpc-server",
        "-H",
        "10.99.0.2",
        "-p",
        "50252",
        "-d",
        "ROCm0,ROCm1",
        "-t",
        "8",
        "-c",
    ]
    plain = rpc_server_argv(host(), LEGACY, cache=False, line_buffered=False)
    assert plain == ["/opt/llama/bin/rpc-server", "-H", "10.99.0.2", "-p", "50252"]


@pytest.mark.parametrize("address", ["0.0.0.0", "8.8.8.8"])
def test_rpc_server_refuses_wildcard_and_public_binds(address: str) -> None:
    # The config record refuses these; a record built around validation must be refused too.
    unsafe = host().model_copy(update={"link_address": ipaddress.IPv4Address(address)})
    with pytest.raises(UnsafeBindError, match=address):
        rpc_server_argv(unsafe, CURRENT, cache=False)


def test_rpc_server_env_sets_llama_cache_only_when_configured() -> None:
    assert rpc_server_env(host(env={"HSA_OVERRIDE": "1"})) == {"HSA_OVERRIDE": "1"}
    env = rpc_server_env(host(env={"HSA_OVERRIDE": "1"}, rpc_cache_dir="/srv/rpc-cache"))
    assert env == {"HSA_OVERRIDE": "1", "LLAMA_CACHE": "/srv/rpc-cache"}


def test_llama_server_argv_current_generation() -> None:
    argv = server_argv(CURRENT)
    assert argv[:3] == ["/opt/llama/bin/llama-server", "-m", "/models/tiny.gguf"]
    assert after(argv, "--rpc") == "10.99.0.2:50252,10.99.0.1:50252"
    assert after(argv, "-ts") == "1.2/0.8"
    assert (after(argv, "-ngl"), after(argv, "-c"), after(argv, "-np")) == ("99", "8192", "2")
    assert after(argv, "-fa") == "on"
    assert after(argv, "--load-mode") == "dio"
    assert "--direct-io" not in argv and "-dio" not in argv
    assert (after(argv, "--host"), after(argv, "--port")) == ("127.0.0.1", "18250")
    assert after(argv, "-lv") == "4"
    assert "--no-warmup" in argv
    assert "--api-key" not in argv


def test_llama_server_argv_legacy_generation_uses_its_direct_io_flag() -> None:
    argv = server_argv(LEGACY)
    assert "-dio" in argv
    assert "--load-mode" not in argv and "dio" not in argv


@pytest.mark.parametrize("caps", [CURRENT, LEGACY], ids=["current", "legacy"])
def test_every_flag_we_emit_is_in_that_builds_help(caps: Capabilities) -> None:
    prof = profile(threads=4)
    argv = server_argv(caps, prof=prof, api_key_file="/run/k")[1:]
    emitted = {arg for arg in argv if arg.startswith("-") and not arg[1:2].isdigit()}
    assert emitted <= caps.server_flags
    rpc_argv = rpc_server_argv(host(rpc_devices=["CPU"], rpc_threads=2), caps, cache=True)
    rpc_help_file = "current-ggml-rpc-server" if caps is CURRENT else "legacy-rpc-server"
    rpc_help = parse_server_help(read_text(FIXTURES / f"help/{rpc_help_file}.txt"))
    assert {arg for arg in rpc_argv[3:] if arg.startswith("-")} <= rpc_help


def test_llama_server_argv_without_rpc_hosts_has_no_rpc_flag() -> None:
    argv = server_argv(CURRENT, endpoints=[], split=[1.0])
    assert "--rpc" not in argv
    assert after(argv, "-ts") == "1"


def test_split_is_written_with_slashes() -> None:
    argv = server_argv(CURRENT, split=[0.5, 0.25, 0.25])
    assert after(argv, "-ts") == "0.5/0.25/0.25"
    assert "," not in after(argv, "-ts")


def test_direct_io_off_and_missing_capability() -> None:
    assert "--load-mode" not in server_argv(CURRENT, prof=profile(direct_io=False))
    no_dio = replace(CURRENT, direct_io_args=())
    with pytest.raises(MissingCapabilityError, match="direct_io"):
        server_argv(no_dio)
    assert "--load-mode" not in server_argv(no_dio, prof=profile(direct_io=False))


def test_flash_attn_spelling_follows_the_build() -> None:
    switch = replace(CURRENT, flash_attn="switch")
    assert "-fa" in server_argv(switch)
    assert "-fa" not in server_argv(switch, prof=profile(flash_attn="auto"))
    assert after(server_argv(LEGACY, prof=profile(flash_attn="off")), "-fa") == "off"


def test_command_prefix_and_extra_args_order() -> None:
    head = host(name="evo", link_address="10.99.0.1", command_prefix=["toolbox", "run", "--"])
    argv = server_argv(
        CURRENT, head=head, prof=profile(extra_args=["--metrics", "--cache-ram", "0"], threads=6)
    )
    assert argv[:4] == ["toolbox", "run", "--", "/opt/llama/bin/llama-server"]
    assert argv[-3:] == ["--metrics", "--cache-ram", "0"]
    assert after(argv, "-t") == "6"


def test_the_api_key_goes_by_file_and_secrets_in_extra_args_are_redacted() -> None:
    argv = server_argv(CURRENT, api_key_file="/home/u/run/llama-server.key")
    assert after(argv, "--api-key-file") == "/home/u/run/llama-server.key"
    assert "--api-key" not in argv
    no_file = replace(CURRENT, server_flags=CURRENT.server_flags - {"--api-key-file"})
    with pytest.raises(MissingCapabilityError, match="--api-key-file"):
        server_argv(no_file, api_key_file="/k")
    # What a user put in extra_args, in either spelling, never reaches a record.
    argv = server_argv(
        CURRENT, prof=profile(extra_args=["--hf-token", "hf_abc", "--api-key=s3cret", "-hft", "x"])
    )
    shown = redact(argv)
    assert not {"hf_abc", "--api-key=s3cret", "x"} & set(shown)
    assert shown[-5:] == ["--hf-token", "***", "--api-key=***", "-hft", "***"]
    assert len(shown) == len(argv)
    assert redact(
        ["env", "HF_TOKEN=abc", "LLAMA_CACHE=/c", "llama-server", "--api-key-file", "/k"]
    ) == [
        "env",
        "HF_TOKEN=***",
        "LLAMA_CACHE=/c",
        "llama-server",
        "--api-key-file",
        "/k",
    ]


# ---------------------------------------------------------------- classify order


def test_version_mismatch_outranks_connect_whatever_the_order() -> None:
    for text in (
        "E RPC server version mismatch: 7.0.0\nE Failed to connect to 10.0.0.2:50052\n",
        "E Failed to connect to 10.0.0.2:50052\nE RPC server version mismatch: 7.0.0\n",
    ):
        assert classify(None, None, text).cls is FailureClass.VERSION_MISMATCH


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # a GPU fault on the rpc host shows as a drop on the head: the fault is the cause
        (
            [
                "recv failed (bytes_recv=0, size_to_recv=8)",
                "Memory access fault by GPU node-1 (Agent handle: 0x1) on address 0x2.",
            ],
            FailureClass.GPU_MEMORY_FAULT,
        ),
        (
            [
                "ggml-rpc.cpp:569: Remote RPC server crashed or returned malformed response",
                "failed to allocate RPC0[10.0.0.2:50052] buffer of size 1",
            ],
            FailureClass.ALLOC_FAILURE,
        ),
        # ggml_abort prints "file:line: message"; the message decides, not the abort
        (
            ["/src/ggml-rpc.cpp:547: Failed to connect to 10.0.0.2:50052"],
            FailureClass.RPC_CONNECT,
        ),
        (
            [
                "/src/ggml-rpc.cpp:550: RPC handshake failed for 10.0.0.2:50052",
                "E RPC server version mismatch: 4.0.1",
            ],
            FailureClass.VERSION_MISMATCH,
        ),
        (
            ["/src/ggml-rpc.cpp:550: RPC handshake failed for 10.0.0.2:50052"],
            FailureClass.RPC_HANDSHAKE,
        ),
        (["terminate called without an active exception"], FailureClass.ABORT_TERMINATE),
    ],
)
def test_signature_order(lines: list[str], expected: FailureClass) -> None:
    assert classify(134, None, "\n".join(lines)).cls is expected


def test_exit_and_watchdog_verdicts_rank_after_signatures() -> None:
    quiet = "0.00.001.000 I srv  load_model: loading model '/m.gguf'\n"
    drop = quiet + "0.01.000.000 E recv failed (bytes_recv=0, size_to_recv=8)\n"
    assert classify(None, None, drop, hung=True).cls is FailureClass.TRANSPORT_DROP
    assert classify(None, 9, quiet, hung=True, timed_out=True).cls is FailureClass.HANG
    assert classify(None, 9, quiet, timed_out=True).cls is FailureClass.TIMEOUT
    assert classify(134, None, quiet).cls is FailureClass.ABORT_TERMINATE
    assert classify(None, 6, quiet).cls is FailureClass.ABORT_TERMINATE
    killed = classify(137, None, quiet)
    assert (killed.cls, killed.evidence_line) == (FailureClass.SIGNAL, "killed by SIGKILL")
    assert classify(None, 15, quiet).evidence_line == "killed by SIGTERM"
    http = quiet + 'srv operator(): got exception: {"error":{"code":500}}\n'
    assert classify(None, 11, http).cls is FailureClass.SIGNAL
    assert classify(None, None, http).cls is FailureClass.HTTP_ERROR
    failed = quiet + "0.00.002.000 E srv  llama_server: exiting due to model loading error\n"
    unknown = classify(1, None, failed)
    assert unknown.cls is FailureClass.UNKNOWN
    assert unknown.evidence_line == "srv  llama_server: exiting due to model loading error"
    assert classify(0, None, quiet) == classify(None, None, "")
    assert classify(0, None, quiet).cls is FailureClass.NONE


# ---------------------------------------------------------------- LoadProgress


def test_progress_counts_dots_before_their_line_ends() -> None:
    progress = LoadProgress()
    progress.feed(
        "0.00.010.991 I load_tensors: RPC0[127.0.0.1:50263] model buffer size =     0.81 Mi"
    )
    assert progress.progress_marks == 0  # the line is not complete yet
    progress.feed("B\n...")
    assert (progress.progress_marks, progress.dots) == (4, 3)
    progress.feed("..")
    assert (progress.progress_marks, progress.dots) == (6, 5)
    progress.feed("...\n0.02.885.345 I llama_context: constructing llama_context\n")
    assert (progress.progress_marks, progress.dots) == (10, 8)
    assert progress.phase is Phase.CONTEXT
    assert progress.model_buffers == {"RPC0[127.0.0.1:50263]": 0.81}


def test_phase_never_goes_back() -> None:
    progress = LoadProgress()
    progress.feed("0.00.032.143 I srv  llama_server: model loaded\n")
    assert progress.ready
    progress.feed(
        "0.00.040.000 I load_tensors: loading model tensors, this can take a while... "
        "(load_mode = dio)\n"
    )
    assert progress.phase is Phase.MODEL_LOADED
    assert progress.load_mode == "dio"


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        ("", False),
        ("version:", False),
        ("version: ", False),
        ("version: 0.5.0-dev (build x, commit ?)", True),
        ("version: 0 (", True),
        ("\x00\xff\ufffd version: 1 (e3a74b2)", False),
        ("Segmentation fault (core dumped)\n", False),
        ("version: 0.5.0-dev (build 0, commit unknown)\r\n", True),
    ],
)
def test_parse_version_never_raises(text: str, readable: bool) -> None:
    parsed = parse_version(text)
    assert parsed.readable is readable
    assert parsed.commit is None


def test_version_forms_of_one_source_name_the_same_commit_or_none() -> None:
    """The forms LLAMACPP.md lists for each generation: never a crash, commit or None."""
    forms = {
        "version: 0.5.0-dev (build 1, commit 0c1e570)": ("0c1e570", 1),
        "version: 0.5.0-dev (build 0, commit unknown)": (None, 0),
        "version: 0.5.0-dev (build 0, commit 0c1e570)": ("0c1e570", 0),
        "version: 1 (e3a74b2)": ("e3a74b2", 1),
        "version: 0 (unknown)": (None, 0),
        "version: 0 (e3a74b2)": ("e3a74b2", 0),
        "version: 6690 (4d1a2e3f)": ("4d1a2e3f", 6690),
    }
    for line, (commit, number) in forms.items():
        parsed = parse_version(f"noise before\n{line}\nbuilt with GNU 12.2.0 for Linux x86_64\n")
        assert (parsed.commit, parsed.build_number, parsed.raw) == (commit, number, line)
