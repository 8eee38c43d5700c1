"""``stainless-evaluate``: held-out phantom evaluation of a model-1, 2 or 3 checkpoint.

Model 3 writes ``metrics.json`` (image quality and the automatic classification per class,
beside thesis Table 8.3, with the class pairs the stained cells confuse and, from a
classifier of the DIC alone trained for the purpose, whether the DIC holds what tells each
pair apart), ``confusion.png``
and ``samples.png`` (one cell per class: DIC, brightfield truth, stained); the rest of this
text is about models 1 and 2.

Writes into the output folder ``metrics.json`` (with a row per cell), ``confusion.png``
(cell classes; model 1 only, model 2 does not classify), ``delta_lpips.png`` (δ against
LPIPS with the review threshold), ``reliability.png`` (the calibration of δ) and
``samples.png`` (DIC, brightfield truth, stained, heat map) and, for model 1,
``probabilities.png`` (the reliability of the class probabilities before and after their
calibration on ``--calibration-fields`` more fields). Each model's δ is its own
variant: the chapter-7 whole-latent δ for model 1, the chapter-6 Algorithm-2 δ for
model 2. Seeded: the same checkpoint and options give the same files.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console

from stainless.cli.output import progress
from stainless.core.config import SettingsError, load_settings
from stainless.core.storage.factory import create_store
from stainless.imaging.phantom_set import phantom_config
from stainless_training.backbones import STORE_PREFIX, quality_metrics
from stainless_training.config import ConfigError, ModelKind, TrainingConfig, load_config
from stainless_training.dic_probe import ProbeSettings, probe_logits, train_dic_probe
from stainless_training.evaluate import ColourTransfer
from stainless_training.evaluate_paired import evaluate_paired
from stainless_training.evaluation_models import model_evaluation, paired_models
from stainless_training.phantom_data import CellSample, phantom_samples
from stainless_training.plots import (
    confusion_plot,
    delta_lpips_plot,
    paired_sample_grid,
    probability_reliability_plot,
    reliability_plot,
    sample_grid,
)
from stainless_training.settings import TrainingSettings

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
err = Console(stderr=True)

FILES = ("metrics.json", "confusion.png", "delta_lpips.png", "reliability.png", "samples.png")
"""What a model-1 evaluation writes (model 2: all but confusion.png)."""


class FidNet(StrEnum):
    ALEXNET = "alexnet"
    INCEPTION_V3 = "inception_v3"


@app.command()
def main(
    checkpoint: Annotated[Path, typer.Option(help="checkpoint.pt with config.yaml beside it.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and samples.png.")],
    fields: Annotated[int, typer.Option(min=1, help="Held-out phantom fields.")] = 20,
    seed: Annotated[
        int, typer.Option(help="Held-out phantom seed (not the training seed).")
    ] = 1000,
    lpips_backbone: Annotated[
        str | None,
        typer.Option(
            help="LPIPS backbone weights: a path or store:<key> "
            "(default STAINLESS_EVALUATION__LPIPS_BACKBONE; none: random)."
        ),
    ] = None,
    fid_net: Annotated[
        FidNet | None,
        typer.Option(
            help="FID feature network, inception_v3 is slow on a CPU "
            "(default STAINLESS_EVALUATION__FID_NET)."
        ),
    ] = None,
    fid_weights: Annotated[
        str | None,
        typer.Option(
            help="torchvision state dict of the FID network: a path or store:<key> "
            "(default STAINLESS_EVALUATION__FID_WEIGHTS; none: random)."
        ),
    ] = None,
    calibration_fields: Annotated[
        int,
        typer.Option(
            min=1,
            help="Models 1 and 3: phantom fields (seed: the held-out seed + 1) whose cells "
            "calibrate the class probabilities; the export serves that calibration.",
        ),
    ] = 200,
    other_domain: Annotated[
        list[str] | None,
        typer.Option(
            help="Model 1: also classify the held-out cells' brightfield under this "
            "acquisition preset or YAML (repeatable; default: wright). A model with a "
            "third domain is classified on CV cells under its own acquisition too."
        ),
    ] = None,
    dic_probe_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Model 3: train a classifier of the DIC alone for this many steps on the "
            "run's training cells, to say of each confused class pair whether the DIC holds "
            "the difference (0: no probe).",
        ),
    ] = 1500,
) -> None:
    """Evaluate on cells from phantom fields the model never saw."""
    started = time.perf_counter()
    try:
        config = load_config(checkpoint.parent / "config.yaml")
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if seed == config.data.phantom_seed:
        err.print("[red]error:[/red] the held-out seed must differ from the training seed")
        raise typer.Exit(2)
    calibrated = config.model in (ModelKind.MTMD, ModelKind.PAIRED)
    if calibrated and seed + 1 == config.data.phantom_seed:
        err.print("[red]error:[/red] the calibration seed (held-out + 1) is the training seed")
        raise typer.Exit(2)
    if config.model is ModelKind.PAIRED:
        _evaluate_paired(
            config,
            checkpoint,
            out,
            fields=fields,
            seed=seed,
            calibration_fields=calibration_fields,
            probe_steps=dic_probe_steps,
        )
        return
    try:
        settings = load_settings(TrainingSettings)
        given = {"lpips_backbone": lpips_backbone, "fid_weights": fid_weights, "fid_net": fid_net}
        evaluation = settings.evaluation.model_copy(
            update={k: (v.value if isinstance(v, FidNet) else v) for k, v in given.items() if v}
        )
        references = (evaluation.lpips_backbone, evaluation.fid_weights)
        in_store = any(r and r.startswith(STORE_PREFIX) for r in references)
        store = create_store(settings.store) if in_store else None
        perceptual, fid = quality_metrics(evaluation, store)
    except (FileNotFoundError, ValueError, SettingsError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    torch.manual_seed(0)
    try:
        evaluation_run = model_evaluation(config, checkpoint)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    image_size = evaluation_run.image_size
    training = phantom_samples(
        fields=config.data.phantom_fields, seed=config.data.phantom_seed, image_size=image_size
    )
    held_out = phantom_samples(fields=fields, seed=seed, image_size=image_size)
    extra: dict[str, Any] = {}
    if config.model is ModelKind.MTMD:

        def under(acquisition: str | dict[str, Any]) -> list[CellSample]:
            return phantom_samples(
                fields=fields,
                seed=seed,
                image_size=image_size,
                config=phantom_config(acquisition=acquisition),
            )

        cv = config.data.cv
        try:
            others = {f"BF {name}": under(name) for name in other_domain or ["wright"]}
        except ValueError as exc:
            err.print(f"[red]error:[/red] --other-domain: {exc}")
            raise typer.Exit(2) from None
        extra["other_domains"] = ({"CV": under(cv.acquisition)} if cv else {}) | others
        extra["labelled"] = config.data.labelled
        extra["calibration_cells"] = phantom_samples(
            fields=calibration_fields, seed=seed + 1, image_size=image_size
        )
    try:
        metrics = evaluation_run.evaluate(
            held_out,
            baseline=ColourTransfer.fit(training),
            perceptual=perceptual,
            fid=fid,
            per_cell=True,
            acceptable_ssim=evaluation.acceptable_ssim,
            review_sensitivity=evaluation.review_sensitivity,
            **extra,
        )
    except ValueError as exc:  # too few held-out cells for a correlation
        err.print(f"[red]error:[/red] {len(held_out)} held-out cells: {exc}; take more --fields")
        raise typer.Exit(2) from None
    metrics["held_out"] = {"fields": fields, "seed": seed, "image_size": image_size}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    written = ["metrics.json"]
    if "confusion" in metrics:
        confusion_plot(
            metrics["confusion"],
            metrics["class_names"],
            out / "confusion.png",
            title=f"held-out phantom cells: accuracy {metrics['accuracy']:.2f}, "
            f"macro-F1 {metrics['macro_f1']:.2f}",
        )
        written.append("confusion.png")
    rows = metrics["per_cell"]
    delta_lpips_plot(
        [r["delta"] for r in rows],
        [r["lpips"] for r in rows],
        out / "delta_lpips.png",
        review_threshold=metrics["review_threshold"],
        pearson_r=metrics["delta_lpips_pearson_r"],
        interval=metrics["confidence_correlations"]["delta"]["lpips"]["pearson_ci"],
        classes=[r["class"] for r in rows],
        lpips_label="LPIPS" + (" (random backbone)" if evaluation.lpips_backbone is None else ""),
        variant=metrics["confidence_variant"],
    )
    reliability_plot(
        metrics["calibration"],
        out / "reliability.png",
        acceptable=metrics["acceptable"],
        review=metrics["review"],
    )
    sample_grid(evaluation_run.confidence, held_out, out / "samples.png")
    written += ["delta_lpips.png", "reliability.png", "samples.png"]
    written += _probability_calibration(metrics, out)
    summary = {
        k: metrics[k]
        for k in (
            "cells",
            "ssim",
            "baseline_ssim",
            "mse",
            "baseline_mse",
            "rmse",
            "baseline_rmse",
            "fid",
            "baseline_fid",
            "accuracy",
            "macro_f1",
            "dice_mean",
            "delta_lpips_pearson_r",
            "gamma_lpips_pearson_r",
            "review_threshold",
            "review_fraction",
            "blackout",
        )
        if k in metrics
    }
    typer.echo(
        json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()})
    )
    for score, by_measure in metrics["confidence_correlations"].items():
        lpips_row = by_measure["lpips"]
        err.print(
            f"{score} ↔ LPIPS ({metrics['confidence_variant']}, n {lpips_row['n']}): "
            f"Pearson {_fmt(lpips_row['pearson'])} {_interval(lpips_row['pearson_ci'])}, "
            f"Spearman {_fmt(lpips_row['spearman'])} {_interval(lpips_row['spearman_ci'])}, "
            f"partial for area {_fmt(lpips_row['partial'])} {_interval(lpips_row['partial_ci'])}"
        )
    for domain, scores in metrics.get("domain_accuracy", {}).items():
        err.print(
            f"classified from {domain}: accuracy {_fmt(scores['accuracy'])}, "
            f"macro-F1 {_fmt(scores['macro_f1'])} (n {scores['cells']})"
        )
    if transfer := metrics.get("label_transfer"):
        below = ", ".join(f"{d} {p:.1f}" for d, p in transfer["points_below"].items())
        err.print(
            f"labels from {'+'.join(transfer['labelled'])} (accuracy "
            f"{_fmt(transfer['labelled_accuracy'])}); points below it: {below}"
        )
    err.print(f"FID {_fmt(metrics['fid'])} ({metrics['fid_provenance']})")
    err.print(f"LPIPS {_fmt(metrics['lpips'])} ({metrics['lpips_provenance']})")
    err.print(f"wrote {', '.join(written)} to {out} in {time.perf_counter() - started:.0f} s")


def _probability_calibration(metrics: dict[str, Any], out: Path) -> list[str]:
    """Draw and say the class probabilities' calibration, if any: the files written."""
    calibration = metrics.get("probability_calibration")
    if not calibration:
        return []
    probability_reliability_plot(calibration, out / "probabilities.png")
    err.print(
        f"class probabilities on {calibration['cells']} calibration cells: ECE "
        f"{_fmt(calibration['ece_raw'])} raw, {_fmt(calibration['ece_calibrated'])} calibrated "
        "(cross-fitted)" + (f"; {calibration['note']}" if calibration["note"] else "")
    )
    return ["probabilities.png"]


def _evaluate_paired(
    config: TrainingConfig,
    checkpoint: Path,
    out: Path,
    *,
    fields: int,
    seed: int,
    calibration_fields: int,
    probe_steps: int,
) -> None:
    """Model 3: image quality and the automatic classification per class (thesis Tables
    8.2–8.4) on held-out cells of the run's slide preset and crop size, the head's
    probabilities calibrated on cells of a further seed, and (``probe_steps``) a classifier
    of the DIC alone trained on the run's training cells beside the head."""
    net, generator, critic = paired_models(config, checkpoint)
    data = config.data

    def cells(count: int, cells_seed: int) -> list[CellSample]:
        return phantom_samples(
            fields=count,
            seed=cells_seed,
            crop_size=data.crop_size,
            image_size=net.image_size,
            config=data.phantom(),
            vocabulary=data.vocabulary(),
        )

    held_out = cells(fields, seed)
    dic_only = None
    if probe_steps:
        training = cells(data.phantom_fields, data.phantom_seed)
        probe_settings = ProbeSettings(
            steps=probe_steps, shift=data.random_crop, scale=data.random_resize, seed=config.seed
        )
        with progress("training the DIC-only classifier", probe_steps) as advance:
            probe = train_dic_probe(
                training,
                n_classes=len(data.vocabulary().classes),
                settings=probe_settings,
                on_step=advance,
            )
        dic_only = probe_logits(probe, held_out)
    metrics = evaluate_paired(
        generator,
        critic,
        held_out,
        vocabulary=data.vocabulary(),
        per_cell=True,
        calibration_cells=cells(calibration_fields, seed + 1),
        dic_only_logits=dic_only,
    )
    if probe_steps:
        metrics["dic_only_classifier"] = (
            f"a small CNN on the DIC crop alone, {probe_steps} class-balanced steps on the "
            f"run's {data.phantom_fields} training fields (seed {data.phantom_seed}); a probe "
            "of the data, never served"
        )
    metrics["held_out"] = {
        "fields": fields,
        "seed": seed,
        "slide": data.slide or "healthy",
        "crop_size": data.crop_size,
        "image_size": net.image_size,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    confusion_plot(
        metrics["confusion"],
        metrics["class_names"],
        out / "confusion.png",
        title=f"held-out phantom cells, stained: accuracy {metrics['accuracy']:.2f}, "
        f"macro-F1 {metrics['macro_f1']:.2f}",
    )
    paired_sample_grid(generator, held_out, metrics["class_names"], out / "samples.png")
    _probability_calibration(metrics, out)
    typer.echo(
        json.dumps(
            {
                k: round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k]
                for k in ("cells", "accuracy", "macro_f1", "brightfield_accuracy", "ssim", "mse")
            }
        )
    )
    err.print(
        f"{'class':>5} {'cells':>5} {'recall':>7} {'precision':>9} {'on BF':>6} "
        f"{'DIC only':>8} {'thesis':>6}"
    )
    for row in metrics["per_class"]:
        err.print(
            f"{row['class']:>5} {row['cells']:>5} {_fmt(row['recall']):>7} "
            f"{_fmt(row['precision']):>9} {_fmt(row['recall_brightfield']):>6} "
            f"{_fmt(row.get('recall_dic_only')):>8} {_fmt(row['thesis_automatic_recall']):>6}"
        )
    if "dic_only_accuracy" in metrics:
        err.print(
            f"DIC-only classifier: accuracy {_fmt(metrics['dic_only_accuracy'])}, "
            f"macro-F1 {_fmt(metrics['dic_only_macro_f1'])}"
        )
    if "generator_class_accuracy" in metrics:
        err.print(
            "the generator's own class of the DIC (sets its colours): accuracy "
            f"{_fmt(metrics['generator_class_accuracy'])}"
        )
    for pair in metrics["confused_on_stained"]:
        a, b = pair["classes"]
        shares = f"{pair['shares'][0]:.0%} / {pair['shares'][1]:.0%}"
        err.print(f"confused: {a}/{b} ({shares}; {pair['where']})")
    err.print(f"thesis: {metrics['thesis_comparison']}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _interval(bounds: list[float] | tuple[float, float] | None) -> str:
    return "" if bounds is None else f"[{bounds[0]:.2f}, {bounds[1]:.2f}]"


def run() -> None:
    app()
