"""Training samples cut from phantom fields: DIC crop, aligned brightfield crop, mask, class.

Pairs come from the phantom's known brightfield→DIC affine, so a brightfield crop
lies pixel-for-pixel under its DIC crop. Crops are cut at ``crop_size`` (256 px,
the thesis' training crops) and resized to the model's ``image_size``. No flips
or rotations: they would reverse the DIC shear relief (thesis ch. 8.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from stainless.domain.cells import CellClass
from stainless.domain.vocabulary import HEALTHY, Vocabulary
from stainless.imaging.cropping import Cropper, box_centre
from stainless.imaging.inputs import dic_unit
from stainless.imaging.phantom import PhantomConfig, PhantomField, generate_field

CLASSES: tuple[CellClass, ...] = tuple(CellClass)
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CellSample:
    dic: F32  # H x W in [0, 1]
    bf: F32  # H x W x 3 in [0, 1], aligned with dic
    mask: npt.NDArray[np.int64]  # H x W, 0 background, 1 red cell, 2 cytoplasm, 3 nucleus
    label: int  # index into the run's vocabulary (CLASSES, the healthy seven, by default)
    field: int  # which phantom field the cell comes from (for held-out splits)


def label_of(code: str, vocabulary: Vocabulary) -> int:
    """The index of a cell's class in ``vocabulary`` (SNE counts as NE in the clinical)."""
    folded = vocabulary.code_of(code)
    if folded not in vocabulary.classes:
        raise ValueError(
            f"a {code} cell, but the run's classes are {', '.join(vocabulary.classes)}"
        )
    return vocabulary.classes.index(folded)


def field_samples(
    field: PhantomField,
    *,
    field_index: int,
    crop_size: int = 256,
    image_size: int = 256,
    include_border: bool = False,
    vocabulary: Vocabulary = HEALTHY,
) -> list[CellSample]:
    """Every white cell of one phantom field as a training sample, labelled by its index
    in ``vocabulary`` (the healthy seven: the order of ``CLASSES``)."""
    cropper = Cropper(sizes=(crop_size,))
    samples = []
    for cell in field.cells:
        if cell.at_border and not include_border:
            continue
        centre = box_centre(cell.box_dic)
        dic = cropper.crop(field.dic, centre, crop_size).image.astype(np.float32)
        bf = cropper.crop_registered(field.bf, field.affine_bf_to_dic, centre, crop_size).image
        mask = cropper.crop(field.mask, centre, crop_size).image
        if image_size != crop_size:
            bf = cv2.resize(bf, (image_size, image_size), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_NEAREST)
        samples.append(
            CellSample(
                dic=dic_unit(dic, image_size),
                bf=(bf.astype(np.float32) / 255.0),
                mask=mask.astype(np.int64),
                label=label_of(str(cell.cell_class), vocabulary),
                field=field_index,
            )
        )
    return samples


def phantom_samples(
    *,
    fields: int,
    seed: int,
    crop_size: int = 256,
    image_size: int = 256,
    config: PhantomConfig | None = None,
    on_field: Callable[[], None] | None = None,
    vocabulary: Vocabulary = HEALTHY,
) -> list[CellSample]:
    """Samples from ``fields`` phantom fields; field ``i`` is drawn from seed ``(seed, i)``."""
    if fields < 1:
        raise ValueError(f"need at least one field, got {fields}")
    config = config or PhantomConfig()
    samples: list[CellSample] = []
    for index in range(fields):
        field = generate_field(config, np.random.default_rng([seed, index]))
        samples += field_samples(
            field,
            field_index=index,
            crop_size=crop_size,
            image_size=image_size,
            vocabulary=vocabulary,
        )
        if on_field is not None:
            on_field()
    return samples


def dic_batch(samples: Sequence[CellSample]) -> torch.Tensor:
    """The DIC crops of ``samples`` as one ``(B, 1, H, W)`` tensor in [-1, 1]."""
    return torch.from_numpy(np.stack([s.dic[None] for s in samples]) * 2 - 1)


class CellDataset(Dataset[dict[str, torch.Tensor]]):
    """Tensors for the networks: images in [-1, 1], channels first."""

    def __init__(self, samples: list[CellSample]) -> None:
        if not samples:
            raise ValueError("a dataset needs at least one sample")
        self._samples = samples

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self._samples]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self._samples[index]
        return {
            "dic": torch.from_numpy(sample.dic[None] * 2 - 1),
            "bf": torch.from_numpy(np.ascontiguousarray(sample.bf.transpose(2, 0, 1)) * 2 - 1),
            "mask": torch.from_numpy(sample.mask),
            "label": torch.tensor(sample.label),
        }
