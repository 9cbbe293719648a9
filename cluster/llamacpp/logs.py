"""Reading llama-server and rpc-server logs: load progress and failure classes.

Two pure parts, both fed text the transports read (no I/O here):

``LoadProgress`` follows a llama-server log as it grows (``feed`` any chunks, split
anywhere) and reports the phase reached, the buffers each device got, the RPC devices
that joined, and ``progress_marks``, a count that grows with every log line and every
progress dot, for the watchdog's stall detection. What the two builds print while the
weights travel differs: legacy builds print progress dots (``......``) after the buffer
lines, current builds print nothing at all until ``llama_context: constructing`` (3.4 s of
silence for a 700 MiB model over loopback), so a stall timeout must cover the transfer.
Load lines need ``-lv 4`` (``Capabilities.verbose_args``); at the default verbosity only
``loading model`` and ``model loaded`` appear.

``classify`` names why a process ended (or stopped) from its exit status, signal and log
tail. Signatures are checked in the order of ``SIGNATURES`` below, most specific first,
and the order is the contract, not the position in the log: a legacy llama-server facing
a current rpc-server logs ``RPC server version mismatch: 7.0.0`` and then ``Failed to
connect to ...``, and the cause is the version, not the connection. After the log
signatures: ``hung`` (the watchdog saw no progress), ``timed_out`` (the overall limit
passed), SIGABRT / exit 134 (abort), any other signal, an HTTP 500 logged by the server,
and finally ``unknown`` for a non-zero exit or ``none`` when nothing failed.

Real texts behind the signatures (both builds, captured in tests/fixtures/llamacpp/):
version mismatch ``RPC server version mismatch: 4.0.1`` then ``ggml-rpc.cpp:550: RPC
handshake failed for 127.0.0.1:50262`` (exit 134); rpc-server SIGKILLed mid-request
``send failed (bytes_sent=0, size_to_send=8)`` or ``recv failed (bytes_recv=0,
size_to_recv=8)`` and ``ggml-rpc.cpp:569: Remote RPC server crashed or returned malformed
response`` (exit 134); nothing listening ``Failed to connect to 127.0.0.1:50259``.
Legacy builds only log a refused or mismatched RPC server and go on serving on the
local CPU without it, so ``LoadProgress.fatal`` reports these while the process lives.
"""

from __future__ import annotations

import re
import signal as signal_module
from dataclasses import dataclass, field
from enum import StrEnum

_TIMESTAMP = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} [A-Z] ")


class FailureClass(StrEnum):
    """Why a llama.cpp process failed; the values are stable and go into records."""

    VERSION_MISMATCH = "version_mismatch"
    RPC_HANDSHAKE = "rpc_handshake"
    RPC_CONNECT = "rpc_connect"
    ALLOC_FAILURE = "alloc_failure"
    GPU_MEMORY_FAULT = "gpu_memory_fault"
    ABORT_TERMINATE = "abort_terminate"
    TRANSPORT_DROP = "transport_drop"
    PORT_IN_USE = "port_in_use"
    MODEL_MISSING = "model_missing"
    SIGNAL = "signal"
    HANG = "hang"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"
    # The prompt plus the generation does not fit one slot's context: HTTP 400
    # exceed_context_size_error, or a generation cut short. The server goes on serving.
    CONTEXT_FULL = "context_full"
    UNKNOWN = "unknown"
    NONE = "none"  # exited 0 (or still running) with no failure signature


@dataclass(frozen=True)
class Classification:
    """A failure class and the one line that shows it (log line or exit description)."""

    cls: FailureClass
    evidence_line: str | None


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# Most specific first. Each class's patterns are tried over the whole tail; the first
# class with a match wins and its first matching line is the evidence.
# fmt: off
SIGNATURES: tuple[tuple[FailureClass, tuple[re.Pattern[str], ...]], ...] = (
    # Client side (llama-server) and server side (rpc-server) of a protocol mismatch.
    (FailureClass.VERSION_MISMATCH, (
        _rx(r"RPC server version mismatch: \d+\.\d+\.\d+"),
        _rx(r"HELLO request size mismatch"),
        _rx(r"Expected HELLO command, update client"),
    )),
    (FailureClass.MODEL_MISSING, (
        _rx(r"failed to open GGUF file"),
        _rx(r"failed to open .*: No such file or directory"),
    )),
    # llama-server's HTTP port, or the rpc-server's port (which then exits 0!).
    (FailureClass.PORT_IN_USE, (
        _rx(r"couldn't bind HTTP server socket"),
        _rx(r"couldn't start HTTP listener"),
        _rx(r"Failed to create server socket"),
        _rx(r"Address already in use"),
    )),
    # ROCm: "Memory access fault by GPU node-1 (Agent handle: ...) on address ...". It kills
    # the rpc-server, so on the llama-server side it reads as a transport drop.
    (FailureClass.GPU_MEMORY_FAULT, (
        _rx(r"Memory access fault by GPU node-\d+"),
        _rx(r"an illegal memory access was encountered"),
    )),
    (FailureClass.ALLOC_FAILURE, (
        _rx(r"failed to allocate (?:\S+ )?buffer"),
        _rx(r"unable to allocate \S+ buffer"),
        _rx(r"failed to allocate compute (?:pp|tg) buffers"),
        _rx(r"insufficient memory"),
        _rx(r"(?i)\bout of (?:device )?memory\b"),
        _rx(r"ErrorOutOfDeviceMemory|hipErrorOutOfMemory|std::bad_alloc"),
    )),
    (FailureClass.RPC_HANDSHAKE, (_rx(r"RPC handshake failed for \S+"),)),
    (FailureClass.RPC_CONNECT, (
        _rx(r"Failed to connect to \S+"),
        _rx(r"Cannot resolve host"),
        _rx(r"Failed to parse endpoint"),
    )),
    (FailureClass.TRANSPORT_DROP, (
        _rx(r"Remote RPC server crashed or returned malformed response"),
        _rx(r"\b(?:send|recv) failed \(bytes_(?:sent|recv)="),
    )),
    (FailureClass.ABORT_TERMINATE, (
        _rx(r"terminate called (?:without an active exception|after throwing)"),
        _rx(r"GGML_ASSERT\(.*\) failed"),
        _rx(r"^/\S+\.(?:c|cc|cpp|cu|h|hpp):\d+: "),  # ggml_abort's "/path/file.cpp:123: message"
    )),
    # A request refused while the server lives on: last, so any crash outranks it.
    (FailureClass.CONTEXT_FULL, (_rx(r"exceeds the available context size"),)),
)
# fmt: on

_HTTP_ERROR = (
    _rx(r"got exception: \{\"error\""),
    _rx(r"exiting due to HTTP server error"),
)

_SIGNATURE_RANK = {cls: rank for rank, (cls, _) in enumerate(SIGNATURES)}

# Classes that end the serving attempt even while llama-server keeps running: legacy
# builds log these and then serve on the CPU alone; the others are followed by an abort.
FATAL_WHILE_RUNNING = frozenset(
    {
        FailureClass.VERSION_MISMATCH,
        FailureClass.RPC_HANDSHAKE,
        FailureClass.RPC_CONNECT,
        FailureClass.TRANSPORT_DROP,
        FailureClass.GPU_MEMORY_FAULT,
        FailureClass.MODEL_MISSING,
        FailureClass.PORT_IN_USE,
    }
)


def strip_timestamp(line: str) -> str:
    """``0.00.030.571 I srv  load_model: ...`` -> ``srv  load_model: ...``."""
    return _TIMESTAMP.sub("", line.rstrip())


def match_signature(line: str) -> Classification | None:
    """The failure class one log line shows, by ``SIGNATURES`` order, or None."""
    text = strip_timestamp(line)
    for cls, patterns in SIGNATURES:
        if any(pattern.search(text) for pattern in patterns):
            return Classification(cls, text)
    return None


def _first_match(lines: list[str], patterns: tuple[re.Pattern[str], ...]) -> str | None:
    for line in lines:
        if any(pattern.search(line) for pattern in patterns):
            return line
    return None


def _signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_error_line(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if re.search(r"(?i)\berror\b|^E |exiting due to", line):
            return line
    return None


def classify(
    exit_status: int | None,
    signal: int | None,
    log_tail: str,
    *,
    hung: bool = False,
    timed_out: bool = False,
) -> Classification:
    """Why a llama-server or rpc-server run failed; see the module docstring for the order.

    ``exit_status`` and ``signal`` as the transport reports them (asyncssh: exit_status
    and exit_signal; a shell reports a signal as 128+N, which is read the same way).
    ``hung``: the watchdog stopped it for lack of progress; ``timed_out``: for exceeding
    the overall limit. An SIGSTOPped rpc-server leaves no signature at all: llama-server
    waits in the handshake (no log line, HTTP not bound) or mid-request (log silent,
    /health still 200), so only ``hung`` tells.
    """
    lines = [strip_timestamp(line) for line in log_tail.splitlines()]
    lines = [line for line in lines if line.strip()]
    for cls, patterns in SIGNATURES:
        evidence = _first_match(lines, patterns)
        if evidence is not None:
            return Classification(cls, evidence)
    if hung:
        return Classification(
            FailureClass.HANG, "no load or request progress within the stall limit"
        )
    if timed_out:
        return Classification(FailureClass.TIMEOUT, "not ready within the time limit")
    if signal is None and exit_status is not None and 128 < exit_status <= 128 + 64:
        signal = exit_status - 128
    if signal == signal_module.SIGABRT:
        return Classification(FailureClass.ABORT_TERMINATE, "killed by SIGABRT (exit status 134)")
    if signal is not None:
        return Classification(FailureClass.SIGNAL, f"killed by {_signal_name(signal)}")
    evidence = _first_match(lines, _HTTP_ERROR)
    if evidence is not None:
        return Classification(FailureClass.HTTP_ERROR, evidence)
    if exit_status not in (None, 0):
        return Classification(
            FailureClass.UNKNOWN, _last_error_line(lines) or f"exit status {exit_status}"
        )
    return Classification(FailureClass.NONE, None)


class Phase(StrEnum):
    """How far a llama-server start has come, in the order the log shows them."""

    NOT_STARTED = "not_started"
    STARTING = "starting"
    RPC_CONNECTED = "rpc_connected"
    METADATA = "metadata"
    LOAD_TENSORS = "load_tensors"
    CONTEXT = "context"
    KV_CACHE = "kv_cache"
    MODEL_LOADED = "model_loaded"
    LISTENING = "listening"


PHASE_ORDER = tuple(Phase)

_RPC_DEVICE = (
    _rx(r"- (RPC\d+)\s*: (\S+) \("),  # device_info: "  - RPC0    : 127.0.0.1:50252 (..."
    _rx(r"using device (RPC\d+) \(([^)\s]+)\)"),  # llama_prepare_model_devices
)
_BUFFER = _rx(
    r"^(?P<stage>load_tensors|llama_kv_cache|sched_reserve):\s+(?P<device>\S+)\s+"
    r"(?P<kind>model|KV|compute) buffer size =\s*(?P<mib>[\d.]+) MiB"
)
_LOAD_MODE_CURRENT = _rx(r"load_tensors: loading model tensors.*\(load_mode = (?P<mode>[\w+]+)\)")
_LOAD_MODE_LEGACY = _rx(
    r"load_tensors: loading model tensors.*\(mmap = (?P<mmap>\w+), direct_io = (?P<dio>\w+)\)"
)
_SCHED_RESERVE = _rx(r"sched_reserve: reserving")
_OFFLOADED = _rx(r"load_tensors: offloaded (\d+)/(\d+) layers")
_LISTENING = _rx(r"\blistening on (\S+)")
_LOAD_START = _rx(r"load_tensors: loading model tensors")
_CONTEXT_START = _rx(r"llama_context: constructing llama_context")
_PHASE_MARKERS: tuple[tuple[Phase, re.Pattern[str]], ...] = (
    (Phase.METADATA, _rx(r"llama_model_loader: loaded meta data|^print_info: ")),
    (Phase.LOAD_TENSORS, _LOAD_START),
    (Phase.CONTEXT, _CONTEXT_START),
    (Phase.KV_CACHE, _rx(r"llama_kv_cache: size =")),
    (Phase.MODEL_LOADED, _rx(r"llama_server: model loaded$")),
)


@dataclass
class LoadProgress:
    """Incremental reader of one llama-server log; ``feed`` it chunks as they arrive.

    ``progress_marks`` grows by one for every complete non-empty line and every progress
    dot, and never shrinks: the watchdog compares it over time. The fit step of current
    builds loads the model once without allocating (0.00 MiB buffers, visible with
    ``--verbose``), so each new load, context or reserve replaces the buffers seen before.
    """

    phase: Phase = Phase.NOT_STARTED
    progress_marks: int = 0
    dots: int = 0
    rpc_devices: dict[str, str] = field(default_factory=dict)  # "RPC0" -> "host:port"
    model_buffers: dict[str, float] = field(default_factory=dict)  # device label -> MiB
    kv_buffers: dict[str, float] = field(default_factory=dict)
    compute_buffers: dict[str, float] = field(default_factory=dict)
    load_mode: str | None = None  # "dio", "mmap", "none"...; legacy flags mapped alike
    offloaded_layers: tuple[int, int] | None = None
    listening: str | None = None
    signatures: list[Classification] = field(default_factory=list)
    _partial: str = ""
    _partial_dots: int = 0

    @property
    def ready(self) -> bool:
        """True once ``model loaded`` is logged (both builds print it before listening)."""
        return PHASE_ORDER.index(self.phase) >= PHASE_ORDER.index(Phase.MODEL_LOADED)

    @property
    def fatal(self) -> Classification | None:
        """The signature that ends this attempt even if the process still runs.

        Ranked like ``classify`` (``SIGNATURES`` order), not by position: the abort line
        ``RPC handshake failed`` reaches the log before the logger thread's ``RPC server
        version mismatch``, and the version is the cause.
        """
        fatal = [found for found in self.signatures if found.cls in FATAL_WHILE_RUNNING]
        if not fatal:
            return None
        return min(fatal, key=lambda found: _SIGNATURE_RANK[found.cls])

    @property
    def rpc_endpoints(self) -> list[str]:
        """Endpoints of the RPC devices llama-server reported using, in device order."""
        return list(dict.fromkeys(self.rpc_devices.values()))

    def feed(self, chunk: str) -> None:
        """Take the next piece of the log; lines may be split across chunks anywhere."""
        text = self._partial + chunk
        *complete, self._partial = text.split("\n")
        for line in complete:
            self._line(line)
        self._count_partial_dots()

    def _count_partial_dots(self) -> None:
        # Legacy builds print dots without a newline while the weights load; count them
        # as they come, so a long load shows progress before its line is complete.
        leading = len(self._partial) - len(self._partial.lstrip("."))
        if leading > self._partial_dots:
            self._mark_dots(leading - self._partial_dots)
            self._partial_dots = leading

    def _mark_dots(self, count: int) -> None:
        self.dots += count
        self.progress_marks += count

    def _line(self, raw: str) -> None:
        leading = len(raw) - len(raw.lstrip("."))
        if leading > self._partial_dots:
            self._mark_dots(leading - self._partial_dots)
        self._partial_dots = 0
        line = strip_timestamp(raw[leading:])
        if not line.strip():
            return
        self.progress_marks += 1
        self._advance(Phase.STARTING)
        self._parse(line)

    def _advance(self, phase: Phase) -> None:
        if PHASE_ORDER.index(phase) > PHASE_ORDER.index(self.phase):
            self.phase = phase

    def _parse(self, line: str) -> None:
        found = match_signature(line)
        if found is not None:
            self.signatures.append(found)
        for pattern in _RPC_DEVICE:
            match = pattern.search(line)
            if match:
                self.rpc_devices[match[1]] = match[2]
                self._advance(Phase.RPC_CONNECTED)
        for phase, marker in _PHASE_MARKERS:
            if marker.search(line):
                self._advance(phase)
        for marker, stale in (
            (_LOAD_START, self.model_buffers),
            (_CONTEXT_START, self.kv_buffers),
            (_SCHED_RESERVE, self.compute_buffers),
        ):
            if marker.search(line):
                stale.clear()  # a new load / context / reserve replaces the fit step's dry run
        match = _BUFFER.search(line)
        if match:
            table = {
                "model": self.model_buffers,
                "KV": self.kv_buffers,
                "compute": self.compute_buffers,
            }
            table[match["kind"]][match["device"]] = float(match["mib"])
        match = _LOAD_MODE_CURRENT.search(line)
        if match:
            self.load_mode = match["mode"]
        match = _LOAD_MODE_LEGACY.search(line)
        if match:
            direct, mapped = match["dio"] == "true", match["mmap"] == "true"
            self.load_mode = "dio" if direct else ("mmap" if mapped else "none")
        match = _OFFLOADED.search(line)
        if match:
            self.offloaded_layers = (int(match[1]), int(match[2]))
        match = _LISTENING.search(line)
        if match:
            self.listening = match[1]
            self._advance(Phase.LISTENING)

    def rpc_model_mib(self) -> dict[str, float]:
        """Model buffer MiB per RPC endpoint (``RPC0[127.0.0.1:50253]`` -> its endpoint).

        Both builds label every server's buffer ``RPC0[host:port]`` (the device index is
        per server), so the endpoint in brackets is what identifies the host.
        """
        out: dict[str, float] = {}
        for label, mib in self.model_buffers.items():
            match = re.match(r"^RPC\d+\[(.+)\]$", label)
            if match:
                out[match[1]] = out.get(match[1], 0.0) + mib
        return out
