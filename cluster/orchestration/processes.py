"""Long-running components (rpc-server, llama-server) as detached processes on a host.

Each component runs in its own session (``setsid``), so it survives the controller's
connection and can be stopped as a whole process group. Beside it, in the host's run
directory, lie three files that let any later controller find it again:

- ``NAME.pid``: ``PID STARTTIME`` (the start time guards against a reused pid). A file
  that is not exactly two numbers (empty, truncated by a full disk or a crash mid-write,
  edited by hand) is an *invalid* record: listed with the state ``invalid``, never
  signalled (its pid proves nothing), removed by ``stop``;
- ``NAME.log``: its stdout and stderr (the previous run's log is kept as ``NAME.log.1``);
- ``NAME.json``: what the controller knew when it started it (profile, split, port...).

The shell scripts below are fixed text; everything variable reaches them as positional
arguments of ``sh -c SCRIPT clusterctl ARG...``, each quoted by the transport. What they
print is parsed by pure functions (``parse_listing``, ``parse_poll``) that turn anything
unexpected into data, never an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.config.models import HostConfig
from cluster.llamacpp.commands import LINE_BUFFERED
from cluster.transport.base import Transport

# The state of a record whose pid file does not hold "PID STARTTIME".
INVALID = "invalid"
DEAD = "dead"

# Shared shell functions: read a pid file, is a pid alive (and not a zombie), and is it
# still the process that the pid file recorded (same start time)?
_FUNCTIONS = r"""
# Set pid and st from a pid file; fail unless it holds exactly two numbers, the pid above
# 1 (kill -TERM -1 would signal every process, -0 our own group).
readpid() {
  pid=; st=; extra=
  read -r pid st extra 2>/dev/null < "$1"
  case "$pid" in ''|0*|*[!0-9]*) return 1 ;; esac
  case "$st" in ''|*[!0-9]*) return 1 ;; esac
  [ -z "$extra" ] && [ "${#pid}" -le 9 ] && [ "$pid" -gt 1 ]
}
starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
procstate() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
# The state letter of our process (same start time), or "dead" (gone, zombie, reused pid).
ourstate() {
  s=$(procstate "$1")
  case "$s" in
    ''|Z|X) echo dead ;;
    *) if [ "$(starttime "$1")" = "$2" ]; then echo "$s"; else echo dead; fi ;;
  esac
}
ours() { [ "$(ourstate "$1" "$2")" != dead ]; }
# Spawn and stop of components on one host exclude each other: one lock per run directory,
# held on fd 9 for the rest of the script (a component never inherits it: see SPAWN).
lockdir() {
  mkdir -p -- "$1" || exit 75
  exec 9>"$1/.clusterctl.lock" || exit 75
  flock -w 120 9 || { echo "$1 is locked by another clusterctl for over 120 s" >&2; exit 75; }
}
"""

SPAWN_SCRIPT = (
    _FUNCTIONS
    + r"""
dir=$1; name=$2; shift 2
lockdir "$dir"
pidf="$dir/$name.pid"; logf="$dir/$name.log"; metaf="$dir/$name.json"
if [ -f "$pidf" ] && readpid "$pidf" && ours "$pid" "$st"; then
  echo "$name already runs as pid $pid" >&2; exit 17
fi
[ -f "$logf" ] && mv -f -- "$logf" "$logf.1"
: > "$logf"
rm -f -- "$dir/$name.exit"
cat > "$metaf"
# The leader shell waits for the component and writes its exit status; its TERM trap is
# not inherited across exec, so the component still gets the default action.
setsid sh -c 'trap : TERM INT HUP; "$@"; echo $? > "$0"' "$dir/$name.exit" "$@" \
  < /dev/null >> "$logf" 2>&1 9>&- &
pid=$!
# Written whole or not at all: a reader never sees half a pid file.
echo "$pid $(starttime "$pid")" > "$pidf.new" && mv -f -- "$pidf.new" "$pidf"
echo "$pid"
"""
)

# Exit 0 with one word: absent, invalid, stale, terminated, killed; exit 3 with
# "survived PID". Under the host's lock, so a spawn cannot slip in between reading the pid
# file and removing it; the files are removed only while the pid file still names the
# process this stop read (its owner). After the process group is gone, the component's
# port (from its metadata) must be free: a server that a container prefix started in a
# session of its own (podman exec, toolbox run) outlives its wrapper, and is stopped by
# the pid that listens there, if that process started after the wrapper (so it is ours).
STOP_SCRIPT = (
    _FUNCTIONS
    + r"""
dir=$1; name=$2; grace=$3
pidf="$dir/$name.pid"; metaf="$dir/$name.json"
[ -f "$pidf" ] || { echo absent; exit 0; }
lockdir "$dir"
[ -f "$pidf" ] || { echo absent; exit 0; }
forget() {
  [ "$(cat -- "$pidf" 2>/dev/null)" = "$1" ] && rm -f -- "$pidf" "$metaf" "$dir/$name.exit"
}
if ! readpid "$pidf"; then
  forget "$(cat -- "$pidf" 2>/dev/null)"; echo invalid; exit 0
fi
record="$pid $st"
port=$(sed -n 's/.*"port": *\([0-9][0-9]*\).*/\1/p' "$metaf" 2>/dev/null | head -n 1)
# Pids listening on the port that started no earlier than the wrapper: ours.
listeners() {
  [ -n "$port" ] || return 0
  pids=$(ss -Htlnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2)
  for p in $(echo "$pids" | sort -u); do
    [ "$(starttime "$p")" -ge "$st" ] 2>/dev/null && echo "$p"
  done
}
word=stale
if ours "$pid" "$st"; then
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  # A stopped process (SIGSTOP, a hang we injected) only acts on TERM once continued.
  kill -CONT "-$pid" 2>/dev/null || kill -CONT "$pid" 2>/dev/null
  ticks=$((grace * 10)); i=0
  while ours "$pid" "$st" && [ "$i" -lt "$ticks" ]; do sleep 0.1; i=$((i + 1)); done
  word=terminated
  if ours "$pid" "$st"; then
    kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    i=0
    while ours "$pid" "$st" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if ours "$pid" "$st"; then echo "survived $pid"; exit 3; fi
    word=killed
  fi
fi
left=$(listeners)
if [ -n "$left" ]; then
  kill -TERM $left 2>/dev/null; kill -CONT $left 2>/dev/null
  i=0
  while [ -n "$(listeners)" ] && [ "$i" -lt "$((grace * 10))" ]; do sleep 0.1; i=$((i + 1)); done
  left=$(listeners)
  [ -z "$left" ] || { kill -KILL $left 2>/dev/null; sleep 0.5; }
  left=$(listeners)
  if [ -n "$left" ]; then echo "survived $(echo $left | cut -d' ' -f1)"; exit 3; fi
  word=killed-inside
fi
forget "$record"
echo "$word"
"""
)

# One line per pid file: NAME TAB PID TAB STATE TAB UPTIME_S TAB META-JSON; PID is "-"
# and STATE "invalid" for a pid file that does not hold "PID STARTTIME".
LIST_SCRIPT = (
    _FUNCTIONS
    + r"""
dir=$1
[ -d "$dir" ] || exit 0
for pidf in "$dir"/*.pid; do
  [ -f "$pidf" ] || continue
  name=$(basename "$pidf" .pid)
  up=0
  if readpid "$pidf"; then
    state=$(ourstate "$pid" "$st")
    [ "$state" = dead ] || up=$(ps -o etimes= -p "$pid" | tr -d ' ')
  else
    pid=-; state=invalid
  fi
  meta=$(tr -d '\n' < "$dir/$name.json" 2>/dev/null)
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$pid" "$state" "${up:-0}" "${meta:-{\}}"
done
"""
)

# Size of the log, the process state, its exit status (or -), then the log from OFFSET on.
POLL_SCRIPT = (
    _FUNCTIONS
    + r"""
dir=$1; name=$2; offset=$3; limit=$4
logf="$dir/$name.log"
size=$(stat -c %s -- "$logf" 2>/dev/null || echo 0)
state=dead
if [ -f "$dir/$name.pid" ] && readpid "$dir/$name.pid"; then
  state=$(ourstate "$pid" "$st")
fi
code=$(head -n 1 -- "$dir/$name.exit" 2>/dev/null | head -c 12)
echo "$size $state ${code:--}"
tail -c "+$((offset + 1))" -- "$logf" 2>/dev/null | head -c "$limit"
"""
)


@dataclass(frozen=True)
class ManagedProcess:
    """A component the controller started on a host, read back from its run directory."""

    host: str
    name: str
    pid: int  # 0 for an invalid record: its pid file named no usable pid
    state: str  # a /proc state letter (R, S, T for stopped...), "dead" or "invalid"
    uptime_s: int
    meta: dict[str, Any]

    @property
    def alive(self) -> bool:
        return self.state not in (DEAD, INVALID)

    @property
    def invalid(self) -> bool:
        """Its pid file is empty, truncated or garbage; ``stop`` removes it."""
        return self.state == INVALID


@dataclass(frozen=True)
class StopOutcome:
    """How a stop went: absent, invalid (an unusable pid file, removed), stale,
    terminated, killed, or survived (it did not die)."""

    host: str
    name: str
    word: str
    pid: int | None = None

    @property
    def survived(self) -> bool:
        return self.word == "survived"


@dataclass(frozen=True)
class LogPoll:
    size: int
    state: str
    exit_status: int | None
    new_text: str

    @property
    def alive(self) -> bool:
        return self.state != DEAD

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "clusterctl", *args]


def component_argv(
    host: HostConfig, argv: Sequence[str], env: Mapping[str, str], line_buffered: bool
) -> list[str]:
    """Put ``env K=V`` and ``stdbuf -oL`` between the host's container prefix and the binary.

    ``argv`` starts with ``host.command_prefix`` (the argv builders put it there); the
    environment and line buffering must apply inside the container, so they go after it.
    """
    prefix = len(host.command_prefix)
    if list(argv[:prefix]) != host.command_prefix:
        raise ValueError(f"argv does not start with {host.name}'s command prefix")
    assignments = [f"{key}={value}" for key, value in env.items()]
    return [
        *argv[:prefix],
        *(["env", *assignments] if assignments else []),
        *(LINE_BUFFERED if line_buffered else ()),
        *argv[prefix:],
    ]


async def spawn(
    transport: Transport, run_dir: str, name: str, argv: Sequence[str], meta: Mapping[str, Any]
) -> int:
    """Start argv detached on the host; return its pid. Refuses if it already runs."""
    result = await transport.run(
        _sh(SPAWN_SCRIPT, run_dir, name, *argv), stdin=json.dumps(dict(meta)), check=True
    )
    return int(result.stdout.split()[-1])


async def stop(transport: Transport, run_dir: str, name: str, grace_s: int = 10) -> StopOutcome:
    """SIGTERM the component's process group, then SIGKILL; report one that survives both."""
    result = await transport.run(
        _sh(STOP_SCRIPT, run_dir, name, str(grace_s)), timeout=grace_s + 30
    )
    words = result.stdout.split()
    if result.exit_status == 3 and len(words) == 2:
        return StopOutcome(transport.name, name, "survived", int(words[1]))
    result.check()
    return StopOutcome(transport.name, name, words[0] if words else "absent")


async def list_managed(transport: Transport, run_dir: str) -> list[ManagedProcess]:
    """Every component with a pid file in the host's run directory, dead or alive."""
    result = await transport.run(_sh(LIST_SCRIPT, run_dir), check=True)
    return parse_listing(transport.name, result.stdout)


def parse_listing(host: str, stdout: str) -> list[ManagedProcess]:
    """LIST_SCRIPT's lines as records. A pid that is not a number makes the record
    invalid; an uptime that is not a number is 0; metadata that is not a JSON object is
    empty; a line without its five fields (a file name with a tab or newline) is
    skipped."""
    found = []
    for line in stdout.splitlines():
        fields = line.split("\t", 4)
        if len(fields) != 5 or not fields[0]:
            continue
        name, pid_text, state, uptime, meta = fields
        pid = _count(pid_text)
        if pid is None or state == INVALID:
            pid, state = 0, INVALID
        try:
            parsed = json.loads(meta)
        except json.JSONDecodeError:
            parsed = None
        found.append(
            ManagedProcess(
                host,
                name,
                pid,
                state,
                _count(uptime) or 0,
                parsed if isinstance(parsed, dict) else {},
            )
        )
    return found


async def poll_log(
    transport: Transport, run_dir: str, name: str, offset: int, limit: int = 1 << 20
) -> LogPoll:
    """The log's size and new text since offset, and whether the component still lives."""
    result = await transport.run(
        _sh(POLL_SCRIPT, run_dir, name, str(offset), str(limit)), check=True
    )
    return parse_poll(result.stdout)


def parse_poll(stdout: str) -> LogPoll:
    """POLL_SCRIPT's header line (``SIZE STATE CODE``) and the log text after it; a
    missing or garbled field reads as nothing known (size 0, dead, no exit status)."""
    header, _, text = stdout.partition("\n")
    size, state, code = [*header.split(maxsplit=2), "", "", ""][:3]
    exit_status = _count(code.removeprefix("-"))
    if exit_status is not None and code.startswith("-"):
        exit_status = -exit_status
    return LogPoll(_count(size) or 0, state or DEAD, exit_status, text)


def _count(text: str) -> int | None:
    """A number written in ASCII digits, or None (``str.isdigit`` also takes ``²``)."""
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


async def log_tail(transport: Transport, run_dir: str, name: str, lines: int = 60) -> str:
    """The last lines of a component's log (empty when there is none)."""
    result = await transport.run(["tail", "-n", str(lines), "--", f"{run_dir}/{name}.log"])
    return result.stdout if result.ok else ""


def follow_argv(run_dir: str, name: str, lines: int) -> list[str]:
    """The command that prints a component's log and follows it."""
    return ["tail", "-n", str(lines), "-F", "--", f"{run_dir}/{name}.log"]


async def signal_component(transport: Transport, run_dir: str, name: str, signame: str) -> int:
    """Signal a running component itself, not its wrapper shell; return the leader's pid.

    Tests use it to inject faults the way they happen for real: STOP for a hang, KILL
    for a crash.
    """
    for process in await list_managed(transport, run_dir):
        if process.name == name and process.alive:
            await transport.run(["pkill", f"-{signame}", "-P", str(process.pid)], check=True)
            return process.pid
    raise LookupError(f"{name} does not run on {transport.name}")
