"""A Triton model repository: one folder per served model, ``config.pbtxt`` and a version.

The PyTorch (libtorch) backend names tensors ``INPUT__i`` / ``OUTPUT__i``. Every model
takes a DIC batch ``[B, 1, S, S]``; dynamic batching groups cells from many requests.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

from stainless.export.heads import served_models
from stainless.export.manifest import ServedManifest, write_manifest
from stainless.models.mtmd import MultiTaskTranslator


class InstanceKind(StrEnum):
    GPU = "gpu"
    CPU = "cpu"


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # without the batch dimension; () is one value per cell


def _outputs(model: str, size: int, classes: int, mask_classes: int) -> tuple[Tensor, ...]:
    stained = Tensor("OUTPUT__0", (3, size, size))
    return {
        "stain": (stained,),
        "classify": (Tensor("OUTPUT__0", (classes,)),),
        "segment": (Tensor("OUTPUT__0", (mask_classes, size, size)),),
        "stain_confidence": (
            stained,
            Tensor("OUTPUT__1", ()),  # δ, confidence
            Tensor("OUTPUT__2", ()),  # γ, uncertainty
            Tensor("OUTPUT__3", (size, size)),  # heat map
            Tensor("OUTPUT__4", (classes,)),  # class probabilities
        ),
    }[model]


def _tensor_block(tensor: Tensor) -> str:
    if tensor.dims:
        dims = ", ".join(str(d) for d in tensor.dims)
        return f'  {{ name: "{tensor.name}" data_type: TYPE_FP32 dims: [ {dims} ] }}'
    return (
        f'  {{ name: "{tensor.name}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}'
    )


def model_config(
    name: str,
    *,
    size: int,
    outputs: tuple[Tensor, ...],
    max_batch_size: int,
    instance: InstanceKind,
    queue_delay_us: int = 2000,
) -> str:
    """The ``config.pbtxt`` text of one served model."""
    kind = "KIND_GPU" if instance is InstanceKind.GPU else "KIND_CPU"
    output_blocks = ",\n".join(_tensor_block(t) for t in outputs)
    return (
        f'name: "{name}"\n'
        'platform: "pytorch_libtorch"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{_tensor_block(Tensor('INPUT__0', (1, size, size)))}\n]\n"
        f"output [\n{output_blocks}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
        f"instance_group [ {{ kind: {kind} count: 1 }} ]\n"
    )


def write_repository(
    translator: MultiTaskTranslator,
    repo: Path,
    *,
    name: str,
    image_size: int,
    classes: Sequence[str],
    n_mask_classes: int,
    review_threshold: float,
    version: int = 1,
    instance: InstanceKind = InstanceKind.GPU,
    max_batch_size: int = 32,
    k: int = 10,
    alpha: float = 3.0,
) -> list[Path]:
    """Export ``translator`` as the four served models under ``repo``; return their folders.

    ``repo/stainless.json`` (the manifest) names the model ``name/version`` and lists the
    class names of the probabilities and the calibrated δ review threshold.
    """
    manifest = ServedManifest(
        name=name,
        version=version,
        image_size=image_size,
        classes=tuple(classes),
        k=k,
        alpha=alpha,
        review_threshold=review_threshold,
    )
    models = served_models(translator, image_size=image_size, k=k, alpha=alpha)
    folders = []
    for served, module in models.items():
        folder = repo / served
        (folder / str(version)).mkdir(parents=True, exist_ok=True)
        module.save(str(folder / str(version) / "model.pt"))
        outputs = _outputs(served, image_size, len(classes), n_mask_classes)
        (folder / "config.pbtxt").write_text(
            model_config(
                served,
                size=image_size,
                outputs=outputs,
                max_batch_size=max_batch_size,
                instance=instance,
            )
        )
        folders.append(folder)
    write_manifest(repo, manifest)
    return folders


def load_served(repo: Path, name: str, version: int = 1) -> torch.jit.ScriptModule:
    """A served model back from the repository (parity checks, the local inference adapter)."""
    path = repo / name / str(version) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no model {name!r} version {version} in {repo}")
    with warnings.catch_warnings():  # deprecated, but what Triton's libtorch backend loads
        warnings.simplefilter("ignore", FutureWarning)
        module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")
    return module
