"""``clusterctl provision``: put the inventory's one llama.cpp build on every host."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cluster import errors
from cluster.cli.app import app, context_of, err, out, print_json
from cluster.provision.run import Outcome, ProvisionReport, provision


def _as_json(report: ProvisionReport) -> dict[str, Any]:
    build = report.build
    return {
        "recipe": report.recipe,
        "build_host": report.build_host,
        "dry_run": report.dry_run,
        "build": None
        if build is None
        else {
            "bin_dir": build.bin_dir,
            "identity": build.identity.digest,
            "files": build.files,
            "made_now": build.made_now,
        },
        "hosts": [
            {
                "host": r.host,
                "outcome": r.outcome.value,
                "detail": r.detail,
                "build": r.identity_after,
            }
            for r in report.hosts
        ],
    }


@app.command("provision")
def provision_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", envvar="CLUSTERCTL_PROVISION_DRY_RUN", help="Say what it would do."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", envvar="CLUSTERCTL_PROVISION_JSON")] = False,
) -> None:
    """One llama.cpp build ([build] in hosts.toml) on every host: build once, copy, verify."""
    inventory, _ = context_of(ctx).load()
    config = inventory.build
    build_host = config.build_host or inventory.cluster.head  # checked by the loader
    report = provision(
        inventory,
        config.recipe(),
        build_host=build_host,
        work_dir=config.work_dir,
        jobs=config.jobs,
        dry_run=dry_run,
        say=lambda message: err.print(message, markup=False, highlight=False),
    )
    if as_json:
        print_json(_as_json(report))
    else:
        build = report.build
        where = f"on {report.build_host}"
        if build is None:
            out.print(f"build {report.recipe}: not built yet {where}; provision builds it first")
        else:
            made = "built now" if build.made_now else "already built"
            out.print(f"build {report.recipe} = {build.identity.short}: {made} {where}")
        for result in report.hosts:
            verb = "would" if result.outcome is Outcome.PLANNED else result.outcome.value
            out.print(f"{result.host}: {verb}: {result.detail}", markup=False, highlight=False)
        if build is not None and not report.failed:
            if report.changed and not dry_run:
                out.print(f"every host now runs build {build.identity.short}")
            elif not report.changed:
                out.print(f"nothing to do: every host already runs build {build.identity.short}")
    if report.failed:
        raise typer.Exit(errors.EXIT_REMOTE)
