"""Secrets stay out of records: redaction rules, and what the store writes down."""

from __future__ import annotations

import stat
from pathlib import Path

from cluster.secrets import redact_args, redact_env, redact_record, secret_flag, secret_name
from cluster.store import Store


def test_which_flags_and_names_are_secret() -> None:
    for flag in ("--api-key", "--hf-token", "-hft", "--password", "--auth-token"):
        assert secret_flag(flag), flag
    for flag in ("--api-key-file", "--ssl-key-file", "--port", "-c", "--keep", "--n-predict"):
        assert not secret_flag(flag), flag
    for name in ("HF_TOKEN", "OPENAI_API_KEY", "DB_PASSWORD", "MY_SECRET"):
        assert secret_name(name), name
    for name in ("ROCBLAS_USE_HIPBLASLT", "LLAMA_CACHE", "HSA_OVERRIDE_GFX_VERSION"):
        assert not secret_name(name), name


def test_redaction_keeps_shape_and_hides_values() -> None:
    argv = ["llama-server", "--hf-token", "hf_x", "--api-key=k", "-c", "8192", "TOKEN=t"]
    assert redact_args(argv) == [
        "llama-server", "--hf-token", "***", "--api-key=***", "-c", "8192", "TOKEN=***"
    ]  # fmt: skip
    assert redact_env({"HF_TOKEN": "abc", "LLAMA_CACHE": "/c", "API_KEY": ""}) == {
        "HF_TOKEN": "***",
        "LLAMA_CACHE": "/c",
        "API_KEY": "",
    }


def test_the_store_records_configs_and_events_redacted_and_owner_only(tmp_path: Path) -> None:
    config = {
        "profile": {"name": "p", "extra_args": ["--hf-token", "hf_secret"], "api_key_env": "K"},
        "hosts": {"evo": {"env": {"HF_TOKEN": "hf_secret", "ROCBLAS": "1"}}},
    }
    state = tmp_path / "state"
    with Store(state) as store:
        run_id = store.start_run("launch", "p", config)
        store.event(run_id, "spawned", argv=["env", "HF_TOKEN=hf_secret", "llama-server"])
        run = store.run(run_id)
        assert run is not None
        assert run.config["profile"]["extra_args"] == ["--hf-token", "***"]
        assert run.config["hosts"]["evo"]["env"] == {"HF_TOKEN": "***", "ROCBLAS": "1"}
        assert run.config["profile"]["api_key_env"] == "K"  # a variable's name is no secret
        [(_, _, data)] = store.events(run_id)
        assert data["argv"] == ["env", "HF_TOKEN=***", "llama-server"]
    written = b"".join(path.read_bytes() for path in state.iterdir())  # the db and its WAL
    assert b"hf_secret" not in written and b"--hf-token" in written
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "clusterctl.db").stat().st_mode) == 0o600
    assert redact_record({"a": [{"token": "x"}]}) == {"a": [{"token": "***"}]}
