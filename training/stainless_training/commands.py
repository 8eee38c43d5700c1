"""The training commands of the ``stainless`` CLI: ``train``, ``train-detector``,
``calibrate-detector`` and ``bench training``.

They live with the trainers and join the CLI through the ``stainless.commands`` entry
point (``stainless.cli.plugins``), so the library never imports the training package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stainless.cli.plugins import CliHooks


def register(hooks: CliHooks) -> None:
    """Add the training commands to the CLI."""

    @hooks.bench_app.command("training")
    def bench_training(
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        steps: Annotated[int, typer.Option(min=6, help="Steps of each run.")] = 30,
    ) -> None:
        """Ray Train samples/s of the tiny model 1 on 1 and 2 workers (one core each)."""
        import ray

        from stainless_training.bench import run_training_bench
        from stainless_training.distributed import connect_ray

        settings = hooks.settings()
        hooks.err.print(f"tiny model 1, {steps} steps on 1 then 2 Ray workers")
        connect_ray(settings)
        try:
            result = run_training_bench(steps=steps)
        finally:
            ray.shutdown()
        hooks.emit("training", result, as_json)

    @hooks.app.command()
    def train(
        model: Annotated[str, typer.Option(help="mtmd, disentangled or paired.")],
        dataset: Annotated[str, typer.Option(help="Dataset snapshot key (stainless dataset …).")],
        workers: Annotated[int, typer.Option(min=1, help="Ray Train workers.")] = 1,
        ray_address: Annotated[
            str | None, typer.Option(help="Ray cluster; default STAINLESS_RAY__ADDRESS or local.")
        ] = None,
        config: Annotated[Path | None, typer.Option(help="Training settings (YAML).")] = None,
        steps: Annotated[int | None, typer.Option(min=1, help="Override the steps.")] = None,
    ) -> None:
        """Train a model on a dataset snapshot with Ray Train; register the result."""
        from stainless.stages.retraining.jobs import JobError
        from stainless_training.train_command import base_config
        from stainless_training.train_command import train as run_training

        settings = hooks.settings()
        try:
            version = run_training(
                settings,
                model=model,
                dataset=dataset,
                workers=workers,
                ray_address=ray_address,
                config=base_config(config, steps=steps),
                console=hooks.err,
            )
        except (JobError, OSError) as exc:
            hooks.err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        hooks.err.print(f"registered model version {version}")

    @hooks.app.command("train-detector")
    def train_detector_command(
        modality: Annotated[str, typer.Option(help="bf (brightfield) or dic.")],
        out: Annotated[Path, typer.Option(help="Folder for detector.pt and detector.yaml.")],
        workers: Annotated[int, typer.Option(min=1, help="Ray Train workers.")] = 1,
        steps: Annotated[int | None, typer.Option(min=1, help="Override the steps.")] = None,
        config: Annotated[
            Path | None,
            typer.Option(help="Detector training settings (YAML, DetectorTrainConfig)."),
        ] = None,
        ray_address: Annotated[
            str | None, typer.Option(help="Ray cluster; default STAINLESS_RAY__ADDRESS or local.")
        ] = None,
        dataset: Annotated[
            str | None,
            typer.Option(help="A lab's annotated fields (stainless dataset import coco|yolo)."),
        ] = None,
    ) -> None:
        """Train the learned white-cell detector with Ray Train (any workers) on phantom fields
        across the acquisition variability and, given a dataset, a lab's annotated fields."""
        from stainless.datasets.manifest import DatasetError
        from stainless_training.config import ConfigError
        from stainless_training.detector import load_detector_config
        from stainless_training.detector_command import train as run_training

        settings = hooks.settings()
        overrides: dict[str, object] = {"modality": modality}
        if steps is not None:
            overrides["steps"] = steps
        if dataset is not None:
            overrides["dataset"] = dataset
        try:
            run_config = load_detector_config(config, **overrides)
        except ConfigError as exc:
            hooks.err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        try:
            run_training(
                settings,
                run_config,
                out,
                workers=workers,
                ray_address=ray_address,
                console=hooks.err,
            )
        except (OSError, DatasetError) as exc:
            hooks.err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    @hooks.app.command("calibrate-detector")
    def calibrate_detector_command(
        checkpoint: Annotated[
            Path, typer.Option(help="Learned detector checkpoint (detector.pt).")
        ],
        fields: Annotated[
            int, typer.Option(min=1, help="Held-out random-acquisition fields.")
        ] = 40,
        seed: Annotated[int, typer.Option(min=0, help="Seed of the fields.")] = 77,
        as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    ) -> None:
        """Choose a learned detector's score threshold (best F1 on held-out phantom fields under
        random acquisitions) and store it in the checkpoint, for export and evaluation."""
        from stainless_training.detector import calibrate_threshold

        try:
            calibration = calibrate_threshold(checkpoint, fields=fields, seed=seed)
        except (FileNotFoundError, ValueError) as exc:
            hooks.err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps(calibration))
            return
        table = Table(title=f"{checkpoint}: {fields} fields, seed {seed}", title_justify="left")
        for column in ("threshold", "precision", "recall", "F1", "tp", "fp", "fn"):
            table.add_column(column, justify="right")
        for row in calibration["table"]:
            chosen = "→ " if row["threshold"] == calibration["threshold"] else ""
            table.add_row(
                f"{chosen}{row['threshold']:.2f}",
                *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1")),
                *(str(row[k]) for k in ("tp", "fp", "fn")),
            )
        hooks.err.print(table)
        hooks.err.print(f"stored threshold {calibration['threshold']:g} in {checkpoint}")
