"""``stainless-evaluate``: held-out phantom evaluation of a model-1 checkpoint.

Writes ``metrics.json`` and ``samples.png`` (DIC, brightfield truth, stained, heat map)
into the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console

from stainless.confidence.adapters import StainingLatentModel, predicted_foreground
from stainless.confidence.noise import whole_latent_confidence
from stainless.metrics.perceptual import PerceptualMetric
from stainless.models.mtmd import MultiTaskTranslator, build_multitask
from stainless_training.config import ConfigError, load_config
from stainless_training.evaluate import ColourTransfer, evaluate
from stainless_training.mtmd import model_config
from stainless_training.phantom_data import CLASSES, CellSample, phantom_samples

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)


def sample_grid(translator: MultiTaskTranslator, samples: list[CellSample], path: Path) -> None:
    """A PNG of up to 8 cells: DIC, brightfield truth, stained output, uncertainty map."""
    chosen = samples[:8]
    figure = Figure(figsize=(8, 2 * len(chosen)), dpi=100)
    model = StainingLatentModel(translator)
    for row, sample in enumerate(chosen):
        x = torch.from_numpy(sample.dic[None, None] * 2 - 1)
        with torch.no_grad():
            foreground = predicted_foreground(translator, model.encode(x))
            result = whole_latent_confidence(
                model, x, foreground=foreground, generator=torch.Generator().manual_seed(row)
            )
        stained = ((result.clean[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
        panels = [
            (sample.dic, "gray", "DIC"),
            (sample.bf, None, "brightfield"),
            (stained, None, f"stained δ={result.delta:.2f}"),
            (result.heatmap, "magma", "uncertainty"),
        ]
        for column, (image, cmap, title) in enumerate(panels):
            axis = figure.add_subplot(len(chosen), 4, row * 4 + column + 1)
            axis.imshow(image, cmap=cmap)
            axis.set_title(f"{CLASSES[sample.label]} {title}" if column == 0 else title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path), metadata={"Software": None})  # type: ignore[no-untyped-call]


@app.command()
def main(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint.pt with config.yaml beside it.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and samples.png.")],
    fields: Annotated[int, typer.Option(min=1, help="Held-out phantom fields.")] = 20,
    seed: Annotated[
        int, typer.Option(help="Held-out phantom seed (not the training seed).")
    ] = 1000,
    lpips_backbone: Annotated[Path | None, typer.Option(help="LPIPS backbone weights.")] = None,
) -> None:
    """Evaluate on cells from phantom fields the model never saw."""
    try:
        config = load_config(checkpoint.parent / "config.yaml")
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if seed == config.data.phantom_seed:
        err.print("[red]error:[/red] the held-out seed must differ from the training seed")
        raise typer.Exit(2)
    net = model_config(config)
    translator = build_multitask(net)
    translator.load_state_dict(torch.load(checkpoint, weights_only=False)["translator"])
    training = phantom_samples(
        fields=config.data.phantom_fields, seed=config.data.phantom_seed, image_size=net.image_size
    )
    held_out = phantom_samples(fields=fields, seed=seed, image_size=net.image_size)
    metrics = evaluate(
        translator,
        held_out,
        baseline=ColourTransfer.fit(training),
        perceptual=PerceptualMetric(backbone_weights=lpips_backbone),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    sample_grid(translator, held_out, out / "samples.png")
    summary = {
        k: metrics[k]
        for k in (
            "cells",
            "ssim",
            "baseline_ssim",
            "mse",
            "baseline_mse",
            "accuracy",
            "delta_lpips_pearson_r",
        )
    }
    typer.echo(
        json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()})
    )
    err.print(f"LPIPS: {metrics['lpips_provenance']}")


def run() -> None:
    app()
