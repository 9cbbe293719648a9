"""Keeping secrets out of argv, records, logs and reports.

Two kinds of secret reach clusterctl: the API key (read from the environment variable a
profile names, written to a file only its owner can read on the head, and passed to
llama-server as ``--api-key-file``: never in an argv), and whatever a user puts in a
profile's ``extra_args`` or a host's ``env`` (``--hf-token hf_...``, ``HF_TOKEN = "..."``).
The second kind is redacted wherever configuration is written down: the store (run
configs, events), component metadata (argv), and so everything read back from them
(``show``, reports, ``status``).

A flag is secret when its name says so (``key``, ``token``, ``secret``, ``password``,
``passwd``, ``credential``, ``auth``), unless it names a file (``--api-key-file``,
``--ssl-key-file``: a path is not the secret). An environment variable is secret by the
same words in its name. Values become ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"

_SECRET_WORD = re.compile(r"key|token|secret|passw|credential|auth|cookie", re.IGNORECASE)


def secret_flag(arg: str) -> bool:
    """Is this a flag whose value is a secret (``--api-key``, ``-hft``, ``--hf-token``)?"""
    if not arg.startswith("-") or arg.endswith("-file") or arg.endswith("_file"):
        return False
    name = arg.lstrip("-")
    return name == "hft" or bool(_SECRET_WORD.search(name))


def secret_name(name: str) -> bool:
    """Is an environment variable of this name a secret (``HF_TOKEN``, ``API_KEY``)?"""
    return bool(_SECRET_WORD.search(name))


def redact_args(argv: Iterable[str]) -> list[str]:
    """argv with the values of secret flags (``--x v`` and ``--x=v``) and of secret
    ``NAME=value`` environment assignments replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        head, eq, _ = arg.partition("=")
        if eq and (secret_flag(head) or (not head.startswith("-") and secret_name(head))):
            out.append(f"{head}={REDACTED}")
            continue
        out.append(arg)
        hide_next = secret_flag(arg)
    return out


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    return {name: REDACTED if secret_name(name) and value else value for name, value in env.items()}


def redact_record(data: Any) -> Any:
    """A JSON-like record with every ``env`` table, ``extra_args`` / ``argv`` list and
    ``api_key`` value redacted, at any depth."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key == "env" and isinstance(value, Mapping):
                out[key] = redact_env({str(k): str(v) for k, v in value.items()})
            elif key in ("extra_args", "argv") and isinstance(value, list):
                out[key] = redact_args(str(v) for v in value)
            elif key in ("api_key", "token") and value:
                out[key] = REDACTED
            else:
                out[key] = redact_record(value)
        return out
    if isinstance(data, list):
        return [redact_record(item) for item in data]
    return data
