"""The DIC input contract shared by training and inference.

DIC intensities are scaled with fixed constants (not per crop), so that the relief's
brightness keeps its meaning across cells; a crop is resized to the model's side with
area interpolation, then mapped to [0, 1] (the networks take ``2·x − 1``).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

DIC_LOW, DIC_HIGH = 0.0, 30000.0

F32 = npt.NDArray[np.float32]


def dic_unit(crop: npt.NDArray[np.generic], image_size: int) -> F32:
    """A DIC crop (any numeric dtype, ``[H, W]``) as the model's ``[S, S]`` input in [0, 1]."""
    if crop.ndim != 2 or crop.size == 0:
        raise ValueError(f"a DIC crop must be a non-empty [H, W] image, got shape {crop.shape}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    image = crop.astype(np.float32)
    if image.shape != (image_size, image_size):
        image = np.asarray(
            cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA),
            dtype=np.float32,
        )
    scaled: F32 = np.clip((image - DIC_LOW) / (DIC_HIGH - DIC_LOW), 0, 1).astype(np.float32)
    return scaled
