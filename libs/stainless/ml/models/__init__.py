"""Neural networks of Stainless: the three translators of the thesis and their parts.

* ``mtmd``: model 1, multi-task multi-domain translator (thesis ch. 5);
* ``disentangled``: model 2, style/structure disentangled translator (thesis ch. 6);
* ``paired``: model 3, paired translator with an auxiliary classifier (thesis ch. 8);
* ``segmentation``: the small U-Net used frozen as structure critic by model 2;
* ``blocks``: shared building blocks; ``configs``: ``tiny()`` / ``thesis()`` sizes.

No module picks a device: move models and tensors with ``.to(device)`` in the caller.
"""

from __future__ import annotations

from stainless.ml.models import blocks, disentangled, mtmd, paired, segmentation
from stainless.ml.models.blocks import freeze, parameter_count
from stainless.ml.models.configs import (
    N_CELL_CLASSES,
    N_SEGMENTATION_CLASSES,
    DisentangledConfig,
    MultiTaskConfig,
    PairedConfig,
)
from stainless.ml.models.disentangled import (
    STAINED,
    UNSTAINED,
    DisentangledCode,
    DisentangledTranslator,
    MultiHeadDiscriminator,
    build_disentangled,
    build_disentangled_discriminator,
)
from stainless.ml.models.mtmd import (
    Domain,
    MultiTaskTranslator,
    build_multitask,
    build_multitask_discriminator,
)
from stainless.ml.models.paired import (
    DiscriminatorOutput,
    MultiScaleDiscriminator,
    PairedGenerator,
    build_paired_discriminator,
    build_paired_generator,
)
from stainless.ml.models.segmentation import UNet, build_segmenter, build_structure_critic

__all__ = [
    "N_CELL_CLASSES",
    "N_SEGMENTATION_CLASSES",
    "STAINED",
    "UNSTAINED",
    "DiscriminatorOutput",
    "DisentangledCode",
    "DisentangledConfig",
    "DisentangledTranslator",
    "Domain",
    "MultiHeadDiscriminator",
    "MultiScaleDiscriminator",
    "MultiTaskConfig",
    "MultiTaskTranslator",
    "PairedConfig",
    "PairedGenerator",
    "UNet",
    "blocks",
    "build_disentangled",
    "build_disentangled_discriminator",
    "build_multitask",
    "build_multitask_discriminator",
    "build_paired_discriminator",
    "build_paired_generator",
    "build_segmenter",
    "build_structure_critic",
    "disentangled",
    "freeze",
    "mtmd",
    "paired",
    "parameter_count",
    "segmentation",
]
