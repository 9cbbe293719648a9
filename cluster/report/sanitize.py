"""Removing what identifies the user's setup from a run's record, so results can be published.

A ``Sanitizer`` is built from a run (``Sanitizer.for_run``): the run's configuration says
which host names, ssh targets, user names and directories are the user's own. ``text``
rewrites a string and ``data`` any JSON-ready structure (keys included); the report
writer runs every record through it before rendering, and every text it writes through
it again.

What goes, in the order it is replaced (paths first, so a host name inside a path does
not leave the rest of the path behind):

1. configured paths, as written in the record: ssh keys (``<ssh-key>``), known_hosts files
   (``<known-hosts>``), llama.cpp bin dirs (``<bin-dir>``), run dirs (``<run-dir>``),
   rpc-server cache dirs (``<cache-dir>``), the model's directory (``<models>``), and the
   values of environment variables whose names look secret (``***``);
2. any other path to a ``.gguf`` file keeps only the file name: ``<models>/NAME.gguf``;
3. home directories: ``/home/NAME``, ``/var/home/NAME``, ``/Users/NAME``, ``/root``,
   ``/media/NAME``, ``/run/media/NAME``, ``~`` and ``~NAME`` become ``<home>``;
4. any other absolute path outside the system's own trees (``/usr``, ``/opt``, ``/proc``...)
   keeps only its last component: ``<path>/NAME``;
5. IPv6 and IPv4 addresses (``<addr>``) and MAC addresses (``<mac>``);
6. host names, ssh targets and their domains, the controller's host name (``host1``,
   ``host2``... in the split's order, then ``controller``) and user names (``<user>``), on
   word boundaries so that a host called ``evo`` leaves ``evolution`` alone;
7. e-mail addresses (``<email>``).

It errs on the side of removing: a host called ``a`` also rewrites the article ``a``. What
it keeps: splits (``1.2/0.8``), numbers, shapes, build commits and versions, interface
names, ports and the model's file name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cluster.store import Attempt, Result, Run

HOME = "<home>"
MODELS = "<models>"
ADDR = "<addr>"
SECRET = "***"  # noqa: S105 - the stand-in for a secret, not one
CONTROLLER = "controller"
# The first component of absolute paths that belong to the system, not to the user.
SYSTEM_ROOTS = frozenset(
    {"usr", "lib", "lib32", "lib64", "bin", "sbin", "etc", "proc", "sys", "dev", "opt", "var"}
)
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASS|KEY|AUTH|CRED|COOKIE", re.IGNORECASE)
# Host keys whose values are paths, and what each becomes.
_PATH_FIELDS = {
    "ssh_key": "<ssh-key>",
    "known_hosts": "<known-hosts>",
    "llama_bin_dir": "<bin-dir>",
    "run_dir": "<run-dir>",
    "rpc_cache_dir": "<cache-dir>",
}

_SEGMENT = r"[\w.+@%=~-]+"
_GGUF = re.compile(rf"(?<![\w.~/>-])(?:{_SEGMENT})?(?:/{_SEGMENT})*/({_SEGMENT}\.gguf)\b")
_HOME = re.compile(
    r"(?<![\w.~/>-])(?:/home/[^/\s'\"]+|/var/home/[^/\s'\"]+|/Users/[^/\s'\"]+|/root"
    r"|/media/[^/\s'\"]+|/run/media/[^/\s'\"]+|~(?:[A-Za-z_][\w.-]*)?(?=/))(?![\w.-])"
)
_HOME_OWNER = re.compile(r"(?:/home|/var/home|/Users|/media|/run/media)/([^/\s'\"<>]+)")
_ABSOLUTE = re.compile(rf"(?<![\w.~:>/\]-])/({_SEGMENT})((?:/{_SEGMENT})+)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*(?:%[\w.-]+)?")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_MAC = re.compile(r"(?<![\w:])[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}(?![\w:])")
# Every stand-in the sanitizer writes that looks like an HTML tag.
_PLACEHOLDER = re.compile(
    r"<(home|models|addr|path|user|email|mac|domain|ssh-key|known-hosts|bin-dir|run-dir"
    r"|cache-dir)>"
)
_EMAIL = re.compile(
    r"(?<![\w.+-])(?:<user>|[\w.+-]+)@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)


@dataclass(frozen=True)
class Sanitizer:
    """Replaces the user's names, addresses and paths; see the module docstring.

    ``hosts`` maps a host name (or ssh target, domain, controller name) to its stand-in,
    ``users`` are user names, ``paths`` maps a configured path (or secret value) to its
    stand-in. Build one with ``for_run``; construct directly for other records.
    """

    hosts: Mapping[str, str] = field(default_factory=dict)
    users: frozenset[str] = frozenset()
    paths: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_run(
        cls, run: Run, attempts: Sequence[Attempt] = (), results: Sequence[Result] = ()
    ) -> Sanitizer:
        """What to remove from this run's record, read from its configuration; host names
        that only the attempts and results know (builds, log tails) are added."""
        config = run.config
        hosts = _host_configs(config)
        names: list[str] = []
        for profile in _profiles(config):
            names += [str(name) for name in profile.get("rpc_hosts") or []]
        names += list(hosts)
        cluster = config.get("cluster")
        if isinstance(cluster, dict) and isinstance(cluster.get("head"), str):
            names.append(cluster["head"])
        aliases: dict[str, str] = {}
        _name(aliases, names)
        users: set[str] = set()
        paths: dict[str, str] = {}
        for name, host in hosts.items():
            alias = aliases[name]
            target = host.get("ssh_target")
            if isinstance(target, str) and target:
                user, _, address = target.rpartition("@")
                if user:
                    users.add(user)
                aliases.setdefault(target, alias)
                if not _is_address(address):
                    aliases.setdefault(address, alias)
                    label, _, domain = address.partition(".")
                    aliases.setdefault(label, alias)
                    if "." in domain:
                        aliases.setdefault(domain, "<domain>")
            if isinstance(host.get("user"), str) and host["user"]:
                users.add(host["user"])
            for key, placeholder in _PATH_FIELDS.items():
                value = host.get(key)
                if isinstance(value, str) and value.strip("/.~"):
                    paths.setdefault(value.rstrip("/"), placeholder)
            env = host.get("env")
            if isinstance(env, dict):
                for variable, value in env.items():
                    if _SECRET_ENV.search(str(variable)) and str(value):
                        paths[str(value)] = SECRET
        for profile in _profiles(config):
            model = profile.get("model")
            if isinstance(model, str) and "/" in model.rstrip("/"):
                directory = model.rstrip("/").rsplit("/", 1)[0]
                if directory.strip("/.~"):
                    paths.setdefault(directory, MODELS)
        if isinstance(cluster, dict) and isinstance(cluster.get("name"), str):
            aliases.setdefault(cluster["name"], "cluster")
        if run.controller_host:
            aliases.setdefault(run.controller_host, CONTROLLER)
            aliases.setdefault(run.controller_host.split(".", 1)[0], CONTROLLER)
        for text in _strings(config):
            users.update(_HOME_OWNER.findall(text))
        base = cls(hosts=aliases, users=frozenset(users), paths=paths)
        return base.covering(attempts, results)

    def covering(self, attempts: Sequence[Attempt], results: Sequence[Result]) -> Sanitizer:
        """This sanitizer, also replacing the host names that builds and log tails name
        (``rpc-server@NAME``) but the run's configuration did not."""
        found: list[str] = []
        for attempt in attempts:
            found += list(attempt.builds)
            found += [_component_host(component) for component in attempt.log_tails]
        for result in results:
            found += [_component_host(component) for component in result.log_tails]
        aliases = dict(self.hosts)
        _name(aliases, sorted({name for name in found if name} - set(aliases)))
        return Sanitizer(hosts=aliases, users=self.users, paths=self.paths)

    def text(self, s: str) -> str:
        """The string with every sensitive part replaced."""
        for step in self._steps:
            s = step(s)
        return s

    def data(self, obj: Any) -> Any:
        """A JSON-ready structure with every string (keys too) passed through ``text``."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {self.data(key): self.data(value) for key, value in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.data(item) for item in obj]
        return obj

    @cached_property
    def _steps(self) -> list[Callable[[str], str]]:
        steps: list[Callable[[str], str]] = []
        if self.paths:
            pattern = _path_literals(self.paths)
            steps.append(lambda s: pattern.sub(lambda m: self.paths[m.group(0)], s))
        steps += [
            lambda s: _GGUF.sub(lambda m: f"{MODELS}/{m.group(1)}", s),
            lambda s: _HOME.sub(HOME, s),
            lambda s: _ABSOLUTE.sub(_absolute, s),
            lambda s: _IPV6.sub(_ipv6, s),
            lambda s: _IPV4.sub(ADDR, s),
            lambda s: _MAC.sub("<mac>", s),
        ]
        words = {**{user: "<user>" for user in self.users}, **self.hosts}
        if words:
            names = _literals(words, before=r"(?<![\w<])", after=r"(?!\w)")
            steps.append(lambda s: names.sub(lambda m: words[m.group(0)], s))
        steps.append(lambda s: _EMAIL.sub("<email>", s))
        return steps


def markdown_safe(text: str) -> str:
    """Markdown whose stand-ins show: outside code spans ``<models>`` would be read as an
    HTML tag and vanish on most renderers, so it is written ``&lt;models&gt;`` there."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # even parts are outside code spans
        parts[index] = _PLACEHOLDER.sub(r"&lt;\1&gt;", parts[index])
    return "`".join(parts)


def _literals(table: Mapping[str, str], *, before: str, after: str) -> re.Pattern[str]:
    """One pattern for every key of the table, longest first, so that it is replaced once
    and a short name never cuts into a longer one."""
    keys = sorted((key for key in table if key), key=lambda key: (-len(key), key))
    return re.compile(before + "(?:" + "|".join(map(re.escape, keys)) + ")" + after)


def _path_literals(table: Mapping[str, str]) -> re.Pattern[str]:
    """Configured paths and secret values, longest first. A secret goes wherever it is; a
    path with a slash stands between path boundaries; a one-word relative path (``run``)
    only as a whole value or before a slash, so that the word itself is left alone."""
    pieces = []
    for key in sorted((key for key in table if key), key=lambda key: (-len(key), key)):
        literal = re.escape(key)
        if table[key] == SECRET:
            pieces.append(literal)
        elif "/" in key:
            pieces.append(rf"(?<![\w.-]){literal}(?![\w-])")
        else:
            pieces.append(rf"(?<![\w.-]){literal}(?=/)|^{literal}$")
    return re.compile("|".join(pieces))


def _name(aliases: dict[str, str], names: Iterable[str]) -> None:
    """Give each new name the next ``hostN`` that is not itself a real name."""
    taken = set(aliases.values())
    real = set(aliases) | set(names)
    number = 0
    for name in names:
        if not name or name in aliases:
            continue
        while True:
            number += 1
            alias = f"host{number}"
            if alias not in taken and alias not in real:
                break
        aliases[name] = alias
        taken.add(alias)


def _host_configs(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    hosts = config.get("hosts")
    if isinstance(hosts, dict):
        return {str(name): host for name, host in hosts.items() if isinstance(host, dict)}
    return {}


def _profiles(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every profile dump a run records: ``profile`` (bench, sweep, launch) or ``profiles``
    (screen)."""
    found: list[dict[str, Any]] = []
    if isinstance(config.get("profile"), dict):
        found.append(config["profile"])
    if isinstance(config.get("profiles"), dict):
        found += [p for p in config["profiles"].values() if isinstance(p, dict)]
    return found


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _strings(item)


def _component_host(component: str) -> str:
    """``rpc-server@evo`` -> ``evo``."""
    return component.rpartition("@")[2] if "@" in component else ""


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _absolute(match: re.Match[str]) -> str:
    if match.group(1) in SYSTEM_ROOTS:
        return match.group(0)
    return "<path>/" + match.group(2).rsplit("/", 1)[1]


def _ipv6(match: re.Match[str]) -> str:
    candidate = match.group(0)
    address = candidate.split("%", 1)[0]
    # A candidate may carry a trailing ':' or '.', as in "fe80::1: connection refused".
    for end in range(len(address), 1, -1):
        if _is_ipv6(address[:end]):
            return ADDR + candidate[end:] if "%" not in candidate else ADDR
    return candidate


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
