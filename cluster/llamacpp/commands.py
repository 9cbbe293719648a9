"""Build the argv lists of rpc-server and llama-server from configuration records.

Commands are data: these functions only build lists of strings from a ``HostConfig``, a
``Profile`` and the host's ``Capabilities``; the transports run them (as argv lists end
to end, or joined with ``shlex.join`` for a remote shell). Nothing here does I/O.

Spellings come from ``Capabilities`` (parsed from the build's own ``--help``), never from
constants: the RPC binary name, the direct-I/O flag and the verbosity flag differ between
the two llama.cpp generations a cluster may run.

The API key never enters an argv (every user of the head could read it in ``ps``): the
launcher writes it to a file only its owner can read and llama-server gets
``--api-key-file``. Anything that prints or logs an argv prints ``redact(argv)``, which
also hides secret values a user put in ``extra_args`` (``cluster.secrets``).
(llama-server itself logs the last four characters of the key at start.)
"""

from __future__ import annotations

import ipaddress

from cluster.config.models import HostConfig, Profile, format_split
from cluster.llamacpp.capabilities import Capabilities
from cluster.secrets import redact_args

# rpc-server prints its banner and connection lines with printf on stdout; to a file or
# pipe that is block-buffered and nothing shows until 4 KiB or exit. stdbuf (coreutils)
# makes it line-buffered so the banner and "Accepted client connection" arrive at once.
LINE_BUFFERED = ("stdbuf", "-oL")


class UnsafeBindError(ValueError):
    """rpc-server would listen on a wildcard or public address (it is unauthenticated)."""


class MissingCapabilityError(ValueError):
    """The profile asks for something this build cannot do (e.g. direct I/O)."""


def _binary(host: HostConfig, name: str) -> str:
    return f"{host.llama_bin_dir.rstrip('/')}/{name}"


def _check_private_bind(host: HostConfig) -> str:
    # HostConfig validates this already; checked again because a record built with
    # model_construct() or copied with updates skips validation, and a mistake here
    # exposes an unauthenticated RPC port to a network.
    address = ipaddress.ip_address(str(host.link_address))
    if address.is_unspecified or not (address.is_private or address.is_loopback):
        raise UnsafeBindError(
            f"{host.name}: refusing to bind rpc-server to {address}; it is unauthenticated, "
            "bind it to the private link address only"
        )
    return str(address)


def rpc_server_argv(
    host: HostConfig, caps: Capabilities, *, cache: bool, line_buffered: bool = True
) -> list[str]:
    """The argv that starts this host's RPC server on its private link address.

    ``host.command_prefix`` (e.g. ``toolbox run -c llama-rocm --``) goes first, then
    ``stdbuf -oL`` when ``line_buffered`` (see ``LINE_BUFFERED``), then the binary.
    Raises UnsafeBindError for 0.0.0.0 or a public address.
    """
    argv = [*host.command_prefix]
    if line_buffered:
        argv.extend(LINE_BUFFERED)
    argv += [
        _binary(host, caps.rpc_binary),
        "-H",
        _check_private_bind(host),
        "-p",
        str(host.rpc_port),
    ]
    if host.rpc_devices:
        argv += ["-d", ",".join(host.rpc_devices)]
    if host.rpc_threads is not None:
        argv += ["-t", str(host.rpc_threads)]
    if cache:
        argv.append("-c")
    return argv


def rpc_server_env(host: HostConfig) -> dict[str, str]:
    """Environment for the RPC server: ``host.env`` plus ``LLAMA_CACHE`` when configured.

    Both generations put the tensor cache in ``$LLAMA_CACHE/rpc`` (banner: ``local cache :
    <dir>/rpc``), so ``rpc_cache_dir`` names the parent of the directory that fills up.
    """
    env = dict(host.env)
    if host.rpc_cache_dir is not None:
        env["LLAMA_CACHE"] = host.rpc_cache_dir
    return env


def flash_attn_args(caps: Capabilities, mode: str) -> list[str]:
    """``-fa on|off|auto`` on builds that take a value; a bare ``-fa`` switch otherwise."""
    if caps.flash_attn == "value":
        return ["-fa", mode]
    if caps.flash_attn == "switch":
        return ["-fa"] if mode == "on" else []
    if mode == "on":
        raise MissingCapabilityError(
            "this llama-server has no flash attention flag; set flash_attn = 'auto'"
        )
    return []


def llama_server_argv(
    profile: Profile,
    rpc_endpoints: list[str],
    split: list[float],
    caps: Capabilities,
    *,
    head: HostConfig,
    model_path: str,
    api_key_file: str | None,
) -> list[str]:
    """The argv of llama-server on the head, serving ``profile`` over ``rpc_endpoints``.

    ``split`` is written with '/' (``-ts 1.2/0.8``; ``-ts 5,5`` would not be one split),
    in llama.cpp's device order: RPC devices in ``--rpc`` order, then the head's GPUs.
    ``--rpc`` is left out when there are no endpoints (a single-host profile). The
    profile's ``extra_args`` come last so they can override anything before them.
    Raises MissingCapabilityError when the profile wants direct I/O and the build has no
    flag for it: without it large models hang in load_tensors over RPC (#19745).
    """
    argv = [*head.command_prefix, _binary(head, "llama-server"), "-m", model_path]
    if rpc_endpoints:
        argv += ["--rpc", ",".join(rpc_endpoints)]
    if split:
        argv += ["-ts", format_split(split)]
    argv += [
        "-ngl", str(profile.n_gpu_layers),
        "-c", str(profile.ctx_size),
        "-np", str(profile.parallel),
    ]  # fmt: skip
    argv += flash_attn_args(caps, profile.flash_attn)
    if profile.direct_io:
        if not caps.direct_io_args:
            raise MissingCapabilityError(
                f"profile {profile.name} sets direct_io but this llama-server "
                f"({caps.version_text}) has neither --load-mode dio nor --direct-io; "
                "set direct_io = false"
            )
        argv += caps.direct_io_args
    if profile.no_warmup:
        argv.append("--no-warmup")
    argv += ["--host", profile.bind_host, "--port", str(profile.port)]
    if profile.threads is not None:
        argv += ["-t", str(profile.threads)]
    if api_key_file is not None:
        if "--api-key-file" not in caps.server_flags:
            raise MissingCapabilityError(
                f"profile {profile.name} sets api_key_env but this llama-server "
                f"({caps.version_text}) has no --api-key-file, and a key in its argv would "
                "be visible to every user of the head"
            )
        argv += ["--api-key-file", api_key_file]
    argv += caps.verbose_args
    argv += profile.extra_args
    return argv


def redact(argv: list[str]) -> list[str]:
    """A copy of ``argv`` safe to log or record (``cluster.secrets.redact_args``)."""
    return redact_args(argv)
