"""``stainless models``, ``promote`` and ``rollback``: the registry and what is served.

``models`` lists the registered versions with the metrics a promotion is judged on and
where their files are; ``models register`` adds a checkpoint trained elsewhere (``--served``
when the model repository was exported from it, as the demo's is). ``promote`` serves a
version when its training showed it at least as good as the one served on the same
held-out cells (``--force`` overrides, with the reason printed); ``rollback`` serves an
earlier version, any one with ``--to``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stainless.cli.output import cli_settings, err, out
from stainless.core.config import Settings
from stainless.domain.served import InstanceKind

INSTANCE_HELP = (
    "gpu (default) or cpu instances of Triton's native backends, or cpu-python: the python "
    "backend runs the same model files (a Triton without the native backends)."
)

models_app = typer.Typer(
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    help="The registered model versions: list them (no subcommand) or register a checkpoint.",
)


def _repository(settings: Settings) -> Path:
    return Path(settings.inference.model_repository)


def _figure(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "—" if value is None else f"{value:.3f}"


def _compared(metrics: dict[str, Any]) -> str:
    comparison = metrics.get("comparison")
    if not isinstance(comparison, dict):
        return "—"
    served = ", ".join(
        f"{name} {comparison[name]:.3f}" for name in ("accuracy", "ssim") if name in comparison
    )
    return f"{comparison.get('model')} on {comparison.get('cells', 0)} cells" + (
        f": {served}" if served else ""
    )


@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the registered model versions; the served one is marked *."""
    if ctx.invoked_subcommand is not None:
        return
    from stainless.core.db.engine import create_db_engine
    from stainless.core.registry import list_versions

    settings = cli_settings()
    rows = list_versions(create_db_engine(settings.database))
    if not rows:
        err.print(
            "no model versions are registered: train one (stainless-train ray) or register "
            "a checkpoint (stainless models register CHECKPOINT)"
        )
        return
    for row in rows:
        metrics = row.metrics
        calibration = metrics.get("probability_calibration") or {}
        figures = ", ".join(
            f"{label} {_figure(source, key)}"
            for label, source, key in (
                ("accuracy", metrics, "accuracy"),
                ("SSIM", metrics, "ssim"),
                ("ECE", calibration, "ece_calibrated"),
                ("review δ <", metrics, "review_threshold"),
            )
        )
        marker = "*" if row.status.value == "promoted" else " "
        out.print(
            f"{marker} {row.name}/{row.version}  {row.kind}  {row.status.value}  "
            f"{metrics.get('cells', 0)} held-out cells: {figures}",
            highlight=False,
            soft_wrap=True,
        )
        out.print(f"    compared with: {_compared(metrics)}", highlight=False, soft_wrap=True)
        out.print(
            f"    files: {row.checkpoint_key.rpartition('/')[0]}/  (id {row.id})",
            highlight=False,
            soft_wrap=True,
        )
        if metrics.get("plots"):
            names = ",".join(
                key.rpartition("/")[2].removesuffix(".png") for key in metrics["plots"]
            )
            out.print(f"    plots: {{{names}}}.png beside it", highlight=False, soft_wrap=True)
        if metrics.get("note"):
            out.print(f"    note: {metrics['note']}", highlight=False, soft_wrap=True)
    err.print(
        "files: the checkpoint, config.yaml, metrics.json and a training job's plots in the "
        "object store; stainless-evaluate --checkpoint … --out DIR draws them for any checkpoint"
    )


@models_app.command("register")
def register(
    checkpoint: Annotated[
        Path, typer.Argument(help="checkpoint.pt with config.yaml (and metrics.json) beside it.")
    ],
    served: Annotated[
        bool,
        typer.Option(
            "--served",
            help="The model repository was exported from this checkpoint (stainless export, "
            "the demo): record it as the version served.",
        ),
    ] = False,
) -> None:
    """Register a checkpoint trained elsewhere as the next version of its name (once per
    file: registering it again gives its version back). Prints NAME/VERSION."""
    from stainless.core.db.engine import create_db_engine
    from stainless.core.registry import RegistryError, register_checkpoint
    from stainless.core.storage import create_store
    from stainless.stages.retraining.promotion import adopt_served

    settings = cli_settings()
    engine, store = create_db_engine(settings.database), create_store(settings.store)
    try:
        if served:
            done = adopt_served(engine, store, _repository(settings), checkpoint)
            name = f"{done.name}/{done.version}"
            err.print(f"{name} is registered as the version {_repository(settings)} serves")
        else:
            version = register_checkpoint(engine, store, checkpoint)
            name = f"{version.name}/{version.version}"
            err.print(f"registered {name}: serve it with stainless promote {name}")
    except RegistryError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    typer.echo(name)


def _promotion(
    reference: str | None,
    instance: InstanceKind,
    mirror: str | None,
    *,
    review_threshold: float | None = None,
    classifier: str | None = None,
    force: bool = False,
    to: str | None = None,
) -> None:
    from stainless.core.audit import command_line_actor, record_audit
    from stainless.core.db.engine import create_db_engine
    from stainless.core.registry import RegistryError
    from stainless.core.storage import create_store
    from stainless.ml.export.checkpoint import ExportError
    from stainless.stages.retraining.promotion import PromotionRefused, promote, rollback

    settings = cli_settings()
    engine, store = create_db_engine(settings.database), create_store(settings.store)
    repository = _repository(settings)
    try:
        if reference is None:
            done = rollback(
                engine, store, repository, to=to, instance=instance, mirror_prefix=mirror
            )
        else:
            done = promote(
                engine,
                store,
                repository,
                reference,
                instance=instance,
                mirror_prefix=mirror,
                review_threshold=review_threshold,
                classifier=classifier,
                force=force,
            )
    except PromotionRefused as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    except (RegistryError, ExportError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    action = "promote" if reference is not None else "rollback"
    record_audit(
        engine,
        command_line_actor(),
        action,
        f"model:{done.name}/{done.version}",
        {
            "repository_version": done.repository_version,
            "previous": done.previous_version,
            "verdict": done.verdict,
            "forced": force,
        },
    )
    err.print(
        f"{'promoted' if reference is not None else 'rolled back'}: {done.name}/{done.version} "
        f"is served as version {done.repository_version} of {repository}"
        + ("" if done.previous_version is None else f" (was {done.name}/{done.previous_version})")
    )
    err.print(f"  {done.verdict}")


def promote(
    version: Annotated[str, typer.Argument(help="Model version id or NAME/VERSION.")],
    instance: Annotated[InstanceKind, typer.Option(help=INSTANCE_HELP)] = InstanceKind.GPU,
    mirror: Annotated[
        str | None, typer.Option(help="Also write the repository to this object-store prefix.")
    ] = None,
    review_threshold: Annotated[
        float | None, typer.Option(min=0, help="δ review threshold; default: the calibrated one.")
    ] = None,
    classifier: Annotated[
        str | None,
        typer.Option(
            help="Model 2 only: the model-1 version (id or NAME/VERSION) that classifies its "
            "cells; default: the classifier served now."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Serve it even when it was not shown at least as good as the served version.",
        ),
    ] = False,
) -> None:
    """Serve a registered model version: export it into the model repository (admin).
    Refused unless its training showed it at least as good as the served version on the
    same held-out cells. Model 1 serves its chapter-7 δ, model 2 its chapter-6 δ with a
    model-1 classifier."""
    _promotion(
        version,
        instance,
        mirror,
        review_threshold=review_threshold,
        classifier=classifier,
        force=force,
    )


def rollback(
    to: Annotated[
        str | None,
        typer.Option(help="The version to serve (id or NAME/VERSION); default: the one before."),
    ] = None,
    instance: Annotated[InstanceKind, typer.Option(help=INSTANCE_HELP)] = InstanceKind.GPU,
    mirror: Annotated[
        str | None, typer.Option(help="Also write the repository to this object-store prefix.")
    ] = None,
) -> None:
    """Serve again the version promoted before the current one, or any earlier version
    (admin)."""
    _promotion(None, instance, mirror, to=to)
