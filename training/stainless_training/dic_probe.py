"""A classifier of the DIC crop alone: does the DIC hold what tells two classes apart?

Model 3's head classifies the (stained, DIC) pair, and beside it the (brightfield, DIC)
pair. A pair of classes confused on the stained cells but told apart on the brightfield
ones is lost somewhere between the DIC and the stain, and that alone does not say where:
the head may lean on the stain's colour, which the brightfield has and the stained image
lacks. A network that sees only the DIC, trained on the run's own training cells, tells
the two apart: if it separates the classes, the DIC holds their difference and the
translator loses it; if it confuses them too, the difference is not in the DIC for a
classifier of this size trained this long — as the thesis found for blasts and monocytes
(ch. 8.4). It is a probe of the data, never served.

Class-balanced batches (one cell of each of ``batch_size`` classes) and the augmentations
that keep the shear direction (random crop and resize, no flips or rotations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from stainless.ml.models.classifier import CropClassifier
from stainless_training.augment import paired_jitter
from stainless_training.phantom_data import CellSample, dic_batch
from stainless_training.sampling import class_balanced_batches

__all__ = ["ProbeSettings", "probe_logits", "train_dic_probe"]


@dataclass(frozen=True)
class ProbeSettings:
    steps: int = 1500
    batch_size: int = 12  # at most the number of classes
    learning_rate: float = 1e-3
    shift: float = 0.05  # the run's data.random_crop
    scale: float = 0.1  # the run's data.random_resize
    seed: int = 0


def train_dic_probe(
    samples: Sequence[CellSample],
    *,
    n_classes: int,
    settings: ProbeSettings = ProbeSettings(),
    on_step: Callable[[int], None] | None = None,
) -> CropClassifier:
    """Train a :class:`CropClassifier` on the DIC crops of ``samples`` (seeded: the same cells and
    settings give the same network)."""
    if not samples:
        raise ValueError("no cells to train the DIC probe on")
    torch.manual_seed(settings.seed)
    labels = [s.label for s in samples]
    batch_size = min(settings.batch_size, len(set(labels)))
    probe = CropClassifier(in_channels=1, n_classes=n_classes, image_size=samples[0].dic.shape[-1])
    optimiser = torch.optim.Adam(probe.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    probe.train()
    step, epoch = 0, 0
    while step < settings.steps:
        for indices in class_balanced_batches(
            labels, batch_size=batch_size, seed=settings.seed + epoch
        ):
            dic = dic_batch([samples[i] for i in indices])
            dic, _ = paired_jitter(
                dic, dic, shift=settings.shift, scale=settings.scale, generator=generator
            )
            target = torch.tensor([labels[i] for i in indices])
            loss = nn.functional.cross_entropy(probe(dic), target)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            step += 1
            if on_step is not None:
                on_step(step)
            if step == settings.steps:
                break
        epoch += 1
    return probe.eval()


def probe_logits(
    probe: CropClassifier, samples: Sequence[CellSample], *, batch: int = 64
) -> npt.NDArray[np.float32]:
    """The probe's class logits on each cell's DIC crop."""
    probe.eval()
    with torch.no_grad():
        chunks = [
            probe(dic_batch(samples[start : start + batch])).numpy()
            for start in range(0, len(samples), batch)
        ]
    return np.concatenate(chunks).astype(np.float32)
