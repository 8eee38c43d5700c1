"""``stainless store policies``: each workload's object-store policy, for MinIO or AWS IAM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stainless.cli.output import err
from stainless.core.config import SettingsError, load_settings
from stainless.core.storage.access import grants, policy_document

store_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="The object store's least-privilege policies, one per workload.",
    no_args_is_help=True,
)


@store_app.command("policies")
def policies(
    workload: Annotated[
        list[str] | None, typer.Option(help="Only these workloads (repeat); default: all.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write <workload>.json files into this folder instead of printing."),
    ] = None,
) -> None:
    """The IAM policy of each workload, from the settings' bucket and prefixes.

    Apply them with ``mc admin policy create`` (MinIO; the Helm chart's store-access Job
    does) or as IAM policies (AWS), one identity per workload."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    every = grants(settings)
    unknown = sorted(set(workload or ()) - set(every))
    if unknown:
        err.print(f"[red]error:[/red] no workload {', '.join(unknown)}; known: {', '.join(every)}")
        raise typer.Exit(2)
    documents = {
        name: policy_document(settings.store.bucket, granted)
        for name, granted in every.items()
        if not workload or name in workload
    }
    if out is None:
        typer.echo(json.dumps(documents, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, document in documents.items():
        (out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    err.print(f"{len(documents)} policies in {out}")
