from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stainless.export.triton import InstanceKind, write_repository
from stainless.imaging.phantom import CellClass
from stainless.models.configs import MultiTaskConfig
from stainless.models.mtmd import build_multitask


@pytest.fixture(scope="session")
def exported_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = MultiTaskConfig.tiny()
    repo = tmp_path_factory.mktemp("repo")
    write_repository(
        build_multitask(config).eval(),
        repo,
        name="mtmd-tiny",
        image_size=config.image_size,
        classes=[c.value for c in CellClass],
        n_mask_classes=config.n_segmentation_classes,
        review_threshold=0.5,
        k=4,
        instance=InstanceKind.CPU,
    )
    return repo
