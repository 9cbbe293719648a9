"""``clusterctl provision``: one build on every host, as a result per host.

Order of work: fetch the pinned sdist into the controller's cache; find or make the build
on the build host; read every host's llama.cpp files and plan (``plan``); stop there with
``--dry-run``; otherwise fetch the files the plans need from the build host once, and for
each host: send them to ``<bin_dir>/.clusterctl-incoming/``, check their SHA-256 on the
host, and only then move them into place (one rename per file, so each file is always a
whole old one or a whole new one), keeping what they replace in ``.clusterctl-previous/``;
finally read the host's build identity and compare it with the build's. One host failing
is that host's result; the others go on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cluster.builds import sdist
from cluster.builds.local import cache_root
from cluster.builds.recipe import Recipe
from cluster.config.models import HostConfig, Inventory
from cluster.errors import ClusterError
from cluster.llamacpp import identity
from cluster.provision import plan as planning
from cluster.provision.build import HostBuildDir, find_or_build
from cluster.provision.remote import Remote, Remotes

INCOMING = ".clusterctl-incoming"
PREVIOUS = ".clusterctl-previous"
# Install the RPC server first and llama-server last: a host caught halfway serves with
# whole files of one build or the other, never a torn file.
_ORDER = {"ggml-rpc-server": 0, "rpc-server": 0, "llama-bench": 1, "llama-server": 2}

INSTALL_SCRIPT = r"""
dir=$1; shift
inc="$dir/.clusterctl-incoming"; prev="$dir/.clusterctl-previous"
rm -rf -- "$prev.new"; mkdir -p -- "$prev.new" || exit 2
for item in "$@"; do
  name=${item#?}
  case "$item" in
    +*) if [ -e "$dir/$name" ] || [ -L "$dir/$name" ]; then
          ln -P -- "$dir/$name" "$prev.new/$name" 2>/dev/null \
            || cp -Pp -- "$dir/$name" "$prev.new/$name" || exit 3
        fi
        chmod 0755 -- "$inc/$name" && mv -f -- "$inc/$name" "$dir/$name" || exit 4 ;;
    -*) mv -f -- "$dir/$name" "$prev.new/$name" || exit 5 ;;
  esac
done
rm -rf -- "$prev" && mv -- "$prev.new" "$prev"
rmdir -- "$inc" 2>/dev/null
exit 0
"""


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    PLANNED = "planned"
    INSTALLED = "installed"
    FAILED = "failed"


@dataclass
class HostResult:
    host: str
    outcome: Outcome
    detail: str
    plan: planning.HostPlan | None = None
    identity_after: str | None = None


@dataclass
class ProvisionReport:
    recipe: str
    build_host: str
    dry_run: bool
    build: HostBuildDir | None = None
    hosts: list[HostResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(result.outcome is Outcome.FAILED for result in self.hosts)

    @property
    def changed(self) -> bool:
        return any(r.outcome in (Outcome.INSTALLED, Outcome.PLANNED) for r in self.hosts)


def _installed(remote: Remote, host: HostConfig) -> dict[str, str]:
    result = remote.run(planning.installed_command(host.llama_bin_dir))
    if result.exit_status != 0:
        raise ClusterError(
            f"{host.name}: cannot read {host.llama_bin_dir}: {result.stderr.strip()}"
        )
    return planning.parse_installed(result.stdout)


def _send_and_install(
    remote: Remote, host: HostConfig, plan: planning.HostPlan, build: HostBuildDir, local: Path
) -> str:
    """Copy, verify on the host, swap in; the host's build identity afterwards."""
    bin_dir = host.llama_bin_dir
    incoming = f"{bin_dir}/{INCOMING}"
    made = remote.run(["mkdir", "-p", "--", incoming])
    if made.exit_status != 0:
        raise ClusterError(f"{host.name}: cannot create {incoming}: {made.stderr.strip()}")
    for name in plan.install:
        remote.put(local / name, f"{incoming}/{name}")
    check = remote.run(["sha256sum", "--", *(f"{incoming}/{name}" for name in plan.install)])
    copied = identity.parse_digests(check.stdout)
    wrong = [name for name in plan.install if copied.get(name) != build.files[name]]
    if wrong:
        remote.run(["rm", "-rf", "--", incoming])
        raise ClusterError(
            f"{host.name}: the copy of {', '.join(wrong)} does not match the build's SHA-256; "
            "nothing was replaced"
        )
    items = [f"+{name}" for name in sorted(plan.install, key=lambda n: _ORDER.get(n, 1))]
    items += [f"-{name}" for name in plan.retire]
    swapped = remote.run(["sh", "-c", INSTALL_SCRIPT, "clusterctl", bin_dir, *items])
    if swapped.exit_status != 0:
        raise ClusterError(
            f"{host.name}: installing into {bin_dir} failed ({swapped.exit_status}): "
            f"{swapped.stderr.strip() or 'no output'}"
        )
    after = remote.run(identity.read_command(host.command_prefix, bin_dir))
    return identity.BuildIdentity.from_files(identity.parse_digests(after.stdout)).short


def provision(
    inventory: Inventory,
    recipe: Recipe,
    *,
    build_host: str,
    work_dir: str,
    jobs: int | None = None,
    dry_run: bool = False,
    archive: Path | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> ProvisionReport:
    """Put the recipe's build on every host of the inventory (or say what it would do)."""
    if archive is None:
        sdist_dir = cache_root() / "llama.cpp" / "sdist"
        archive = sdist.fetch(recipe.generation, sdist_dir, cache_root() / "provision.log")
    described = f"{recipe.generation.name} {recipe.generation.sdist_version} ({recipe.backend})"
    report = ProvisionReport(described, build_host, dry_run)
    hosts = list(inventory.hosts.values())
    with Remotes(hosts) as remotes:
        builder = inventory.hosts[build_host]
        report.build = find_or_build(
            remotes[build_host],
            builder,
            recipe,
            archive,
            work_dir=work_dir,
            jobs=jobs,
            dry_run=dry_run,
            say=say,
        )
        plans: dict[str, planning.HostPlan] = {}
        for host in hosts:
            try:
                had = _installed(remotes[host.name], host)
            except ClusterError as exc:
                report.hosts.append(HostResult(host.name, Outcome.FAILED, str(exc)))
                continue
            if report.build is None:
                what = "build first, then install" if not had else "build first, then compare"
                report.hosts.append(
                    HostResult(host.name, Outcome.PLANNED, f"{what} in {host.llama_bin_dir}")
                )
                continue
            plans[host.name] = planning.plan_host(
                host.name, host.llama_bin_dir, report.build.files, had
            )
        if report.build is not None:
            _carry_out(report, report.build, plans, remotes, inventory, dry_run, say)
    order = {host.name: index for index, host in enumerate(hosts)}
    report.hosts.sort(key=lambda result: order[result.host])
    return report


def _carry_out(
    report: ProvisionReport,
    build: HostBuildDir,
    plans: dict[str, planning.HostPlan],
    remotes: Remotes,
    inventory: Inventory,
    dry_run: bool,
    say: Callable[[str], None],
) -> None:
    short = build.identity.short
    todo = {name: p for name, p in plans.items() if p.action is planning.Action.INSTALL}
    for name, plan in plans.items():
        if name not in todo:
            report.hosts.append(
                HostResult(name, Outcome.UNCHANGED, plan.describe(short), plan, short)
            )
        elif dry_run:
            report.hosts.append(HostResult(name, Outcome.PLANNED, plan.describe(short), plan))
    if dry_run or not todo:
        return
    with tempfile.TemporaryDirectory(prefix="clusterctl-provision-") as scratch:
        local = Path(scratch)
        for file_name in sorted({n for plan in todo.values() for n in plan.install}):
            remotes[build.host].get(f"{build.bin_dir}/{file_name}", local / file_name)
        for name, plan in todo.items():
            host = inventory.hosts[name]
            say(f"{name}: {plan.describe(short)}")
            try:
                after = _send_and_install(remotes[name], host, plan, build, local)
            except ClusterError as exc:
                report.hosts.append(HostResult(name, Outcome.FAILED, str(exc), plan))
                continue
            if after != short:
                detail = (
                    f"installed, but {host.llama_bin_dir} now reads as build {after}, not {short}"
                )
                report.hosts.append(HostResult(name, Outcome.FAILED, detail, plan, after))
                continue
            detail = f"installed build {short} ({', '.join(plan.install) or 'nothing new'})"
            if plan.retire:
                detail += f"; retired {', '.join(plan.retire)}"
            if plan.had:
                detail += f"; previous files in {host.llama_bin_dir}/{PREVIOUS}"
            report.hosts.append(HostResult(name, Outcome.INSTALLED, detail, plan, after))
