"""Why a component is gone: each llama.cpp process that stopped, classified.

``rpc_server_failure`` and ``llama_server_failure`` read a dead component's exit status and
log tail and name the cause (``llamacpp.logs.classify``); ``worker_first`` makes a dead
worker the cause when llama-server then failed to reach it. ``AttemptFailed`` carries a
classified cause out of a launch attempt or a request.
"""

from __future__ import annotations

from cluster.concurrency import together
from cluster.config.models import HostConfig
from cluster.llamacpp.capabilities import parse_rpc_banner
from cluster.llamacpp.logs import Classification, FailureClass, classify
from cluster.orchestration import processes
from cluster.orchestration.control import LLAMA_SERVER, RPC_SERVER
from cluster.transport.pool import HostPool


class AttemptFailed(Exception):
    """One attempt ended without serving; carries the classified cause."""

    def __init__(self, failure: FailureClass, evidence: str, component: str = "") -> None:
        super().__init__(f"{failure.value}: {evidence}")
        self.failure = failure
        self.evidence = evidence
        self.component = component


async def rpc_server_failure(pool: HostPool, rpc_hosts: list[HostConfig]) -> AttemptFailed | None:
    """The first rpc-server that is no longer running, classified; None when all run.

    Its own log names a specific cause (an allocation failure, a GPU fault); otherwise a
    worker that went away is a transport drop from the head's point of view.
    """
    # Every host at once: this runs every half second of a load and of a request.
    polls = await together(
        *(
            processes.poll_log(pool[host.name], host.run_dir, RPC_SERVER, 1 << 62)
            for host in rpc_hosts
        )
    )
    for host, poll in zip(rpc_hosts, polls, strict=True):
        if poll.alive:
            continue
        tail = await processes.log_tail(pool[host.name], host.run_dir, RPC_SERVER)
        verdict = classify(poll.exit_status, signal_of(poll.exit_status), tail)
        generic = verdict.cls in (FailureClass.UNKNOWN, FailureClass.SIGNAL, FailureClass.NONE)
        return AttemptFailed(
            FailureClass.TRANSPORT_DROP if generic else verdict.cls,
            f"rpc-server on {host.name} exited ({poll.exit_status}): {evidence(verdict)}",
            RPC_SERVER,
        )
    return None


async def llama_server_failure(pool: HostPool, head: HostConfig) -> AttemptFailed | None:
    """llama-server on the head, classified from its exit and log tail, if it is gone."""
    poll = await processes.poll_log(pool[head.name], head.run_dir, LLAMA_SERVER, 1 << 62)
    if poll.alive:
        return None
    tail = await processes.log_tail(pool[head.name], head.run_dir, LLAMA_SERVER)
    verdict = classify(poll.exit_status, signal_of(poll.exit_status), tail)
    return AttemptFailed(
        verdict.cls,
        f"llama-server exited ({poll.exit_status}): {evidence(verdict)}",
        LLAMA_SERVER,
    )


# What llama-server says when a worker it was using went away mid-load or mid-request:
# it may be sending (a transport drop) or opening a new connection (connect refused).
_WORKER_GONE = {
    FailureClass.RPC_CONNECT,
    FailureClass.RPC_HANDSHAKE,
    FailureClass.TRANSPORT_DROP,
    FailureClass.SIGNAL,
    FailureClass.UNKNOWN,
}


async def worker_first(
    pool: HostPool, rpc_hosts: list[HostConfig], server: AttemptFailed
) -> AttemptFailed:
    """llama-server's failure, unless an rpc-server it used has died: then that is the
    cause (a connect refused by a dead worker is a transport drop, not a setup problem)."""
    if server.failure not in _WORKER_GONE:
        return server
    worker = await rpc_server_failure(pool, rpc_hosts)
    if worker is None:
        return server
    return AttemptFailed(
        worker.failure, f"{worker.evidence}; then {server.evidence}", worker.component
    )


def evidence(verdict: Classification) -> str:
    return verdict.evidence_line or verdict.cls.value


def banner_protocol(text: str) -> str | None:
    try:
        return parse_rpc_banner(text).protocol_version
    except ValueError:
        return None


def signal_of(exit_status: int | None) -> int | None:
    return exit_status - 128 if exit_status is not None and exit_status > 128 else None
