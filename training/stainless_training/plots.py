"""PNG plots of an evaluation: confusion matrix, δ against LPIPS, sample grid.

Each plot draws on its own :class:`~matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global state) and is written without a timestamp, so the same numbers give
the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from stainless_training.evaluate import Confidence, stained_image
from stainless_training.phantom_data import CLASSES, CellSample


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure).print_png(str(path), metadata={"Software": None})  # type: ignore[no-untyped-call]


def confusion_plot(
    confusion: Sequence[Sequence[int]] | npt.NDArray[np.int64],
    class_names: Sequence[str],
    path: Path,
    *,
    title: str = "confusion matrix",
) -> None:
    """Counts per (true, predicted) class, with the class names on both axes."""
    counts = np.asarray(confusion, dtype=np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion must be {n}x{n}, got {counts.shape}")
    figure = Figure(figsize=(1.0 + 0.65 * n, 0.8 + 0.6 * n), dpi=100)
    axis = figure.add_subplot(1, 1, 1)
    image = axis.imshow(counts, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    threshold = counts.max() / 2 if counts.size and counts.max() > 0 else 0
    for i in range(n):
        for j in range(n):
            axis.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if counts[i, j] > threshold else "black",
            )
    axis.set_xticks(range(n), list(class_names))
    axis.set_yticks(range(n), list(class_names))
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)


def reliability_plot(
    calibration: dict[str, Any] | None,
    path: Path,
    *,
    acceptable: str,
    review: dict[str, Any],
) -> None:
    """The calibration of δ: P(acceptable | δ) (left) and the reliability diagram (right:
    mean calibrated probability against the observed share of acceptable cells per bin).
    Without a calibration (every cell acceptable, or none) the figure says so."""
    if calibration is None:
        figure = Figure(figsize=(6, 2), dpi=100)
        figure.text(
            0.5,
            0.5,
            f"no calibration: {review['unacceptable']} of {review['cells']} held-out cells "
            f"unacceptable\n(acceptable: {acceptable}); both kinds are needed",
            ha="center",
            va="center",
            fontsize=9,
        )
        _save(figure, path)
        return
    knots = np.asarray(calibration["delta"], np.float64)
    values = np.asarray(calibration["p_acceptable"], np.float64)
    rows = list(calibration["reliability"])
    figure = Figure(figsize=(9, 4), dpi=100)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    left.plot(knots, values, drawstyle="default", marker=".", color="tab:blue")
    threshold = review.get("threshold")
    if isinstance(threshold, float):
        left.axvline(threshold, color="crimson", linestyle="--")
        left.text(
            threshold,
            0.02,
            f" review below δ={threshold:.3f}\n sensitivity {review['sensitivity']:.2f},"
            f" {review['review_fraction']:.0%} of cells",
            fontsize=7,
            color="crimson",
        )
    left.set_ylim(-0.02, 1.02)
    left.set_xlabel("δ (raw MI per channel, nats)")
    left.set_ylabel("P(acceptable)")
    left.set_title(f"isotonic calibration, acceptable: {acceptable}", fontsize=8)
    predicted = [float(r["predicted"]) for r in rows]
    observed = [float(r["observed"]) for r in rows]
    right.plot([0, 1], [0, 1], color="grey", linestyle=":")
    right.plot(predicted, observed, marker="o", color="tab:blue")
    for p, o, r in zip(predicted, observed, rows, strict=True):
        right.annotate(
            f"n={int(r['cells'])}", (p, o), fontsize=7, xytext=(3, -9), textcoords="offset points"
        )
    right.set_xlim(-0.02, 1.02)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("calibrated P(acceptable)")
    right.set_ylabel("observed share acceptable")
    right.set_title(
        f"reliability on the {int(review['cells'])} held-out cells it was fitted on", fontsize=8
    )
    figure.tight_layout()
    _save(figure, path)


def probability_reliability_plot(calibration: dict[str, Any], path: Path) -> None:
    """The reliability diagram of the top class probability: mean top probability against
    accuracy per bin, raw and after the calibration (cross-fitted), with each ECE."""
    figure = Figure(figsize=(5, 4.5), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for key, ece_key, colour, name in (
        ("reliability_raw", "ece_raw", "tab:red", "raw"),
        ("reliability_calibrated", "ece_calibrated", "tab:blue", "calibrated"),
    ):
        rows = calibration.get(key) or []
        if rows:
            axes.plot(
                [r["confidence"] for r in rows],
                [r["accuracy"] for r in rows],
                marker="o",
                color=colour,
                label=f"{name}: ECE {calibration[ece_key]:.3f}",
            )
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("mean top class probability in the bin")
    axes.set_ylabel("accuracy in the bin")
    title = f"class probabilities, {calibration['cells']} calibration cells"
    axes.set_title(title + (f"\n{calibration['note']}" if calibration["note"] else ""), fontsize=8)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    _save(figure, path)


def delta_lpips_plot(
    deltas: Sequence[float],
    lpips: Sequence[float],
    path: Path,
    *,
    review_threshold: float,
    pearson_r: float | None,
    interval: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    lpips_label: str = "LPIPS",
    variant: str = "whole-latent",
) -> None:
    """Per-cell δ (of confidence ``variant``) against LPIPS, the review threshold as a
    vertical line, r with n and its 95% interval in the title."""
    x = np.asarray(deltas, dtype=np.float64)
    y = np.asarray(lpips, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} δ values against {y.size} LPIPS values")
    figure = Figure(figsize=(6, 4.5), dpi=100)
    axis = figure.add_subplot(1, 1, 1)
    if classes is None:
        axis.scatter(x, y, s=18, alpha=0.8)
    else:
        labels = np.asarray(classes)
        for name in sorted(set(classes)):
            chosen = labels == name
            axis.scatter(x[chosen], y[chosen], s=18, alpha=0.8, label=name)
        axis.legend(fontsize=7, loc="best", title="true class", title_fontsize=7)
    review = int((x < review_threshold).sum())
    axis.axvline(
        review_threshold,
        color="crimson",
        linestyle="--",
        label=None,
    )
    axis.text(
        review_threshold,
        0.98,
        f" review threshold δ={review_threshold:.3f}\n ({review} of {x.size} cells below)",
        transform=axis.get_xaxis_transform(),
        ha="left",
        va="top",
        fontsize=7,
        color="crimson",
    )
    r_text = "undefined" if pearson_r is None else f"{pearson_r:+.2f}"
    if pearson_r is not None and interval is not None:
        r_text += f" (95% CI {interval[0]:+.2f} to {interval[1]:+.2f})"
    axis.set_title(
        f"{variant} δ against {lpips_label}\nPearson r = {r_text}, n = {x.size}", fontsize=9
    )
    axis.set_xlabel("δ (raw mutual information per channel with the clean output, nats)")
    axis.set_ylabel(lpips_label + " to the registered brightfield")
    figure.tight_layout()
    _save(figure, path)


def sample_grid(
    confidence: Confidence, samples: list[CellSample], path: Path, *, cells: int = 8
) -> None:
    """A PNG of up to ``cells`` cells: DIC, brightfield truth, stained output, uncertainty map
    (``confidence`` stains a cell and gives its δ and heat map)."""
    chosen = samples[:cells]
    if not chosen:
        raise ValueError("no cells to draw")
    figure = Figure(figsize=(8, 2 * len(chosen)), dpi=100)
    for row, sample in enumerate(chosen):
        with torch.no_grad():
            result = confidence(torch.from_numpy(sample.dic[None, None] * 2 - 1), row)
        stained = stained_image(result)
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
    _save(figure, path)


def paired_sample_grid(
    stain: Callable[[Tensor], Tensor],
    samples: list[CellSample],
    class_names: Sequence[str],
    path: Path,
) -> None:
    """A PNG of one held-out cell of each class present: DIC, brightfield truth, stained
    (``stain`` maps DIC crops ``(B, 1, S, S)`` in [-1, 1] to stained ``(B, 3, S, S)``)."""
    chosen: dict[int, CellSample] = {}
    for sample in samples:
        chosen.setdefault(sample.label, sample)
    if not chosen:
        raise ValueError("no cells to draw")
    cells = [chosen[label] for label in sorted(chosen)]
    with torch.no_grad():
        dic = torch.from_numpy(np.stack([s.dic[None] for s in cells]) * 2 - 1)
        stained = ((stain(dic).permute(0, 2, 3, 1).numpy() + 1) / 2).clip(0, 1)
    figure = Figure(figsize=(6, 2 * len(cells)), dpi=100)
    for row, (sample, image) in enumerate(zip(cells, stained, strict=True)):
        panels = [
            (sample.dic, "gray", "DIC"),
            (sample.bf, None, "brightfield"),
            (image, None, "stained"),
        ]
        for column, (picture, cmap, title) in enumerate(panels):
            axis = figure.add_subplot(len(cells), 3, row * 3 + column + 1)
            axis.imshow(picture, cmap=cmap)
            label = f"{class_names[sample.label]} {title}" if column == 0 else title
            axis.set_title(label, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    _save(figure, path)
