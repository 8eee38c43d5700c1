"""A Triton model repository: one folder per served model, ``config.pbtxt`` and a version.

Each model is ONNX (``<version>/model.onnx``, ``platform: "onnxruntime_onnx"``) where the
exporter handles its graph and onnxruntime matches eager PyTorch within 1e-4, TorchScript
(``<version>/model.pt``, ``platform: "pytorch_libtorch"``) otherwise; the choice and its
reason are logged and written as the last line of ``config.pbtxt``. Both formats name
tensors ``INPUT__i`` / ``OUTPUT__i`` (the libtorch backend's convention), so clients do
not depend on the format. Every model takes a DIC batch ``[B, 1, S, S]``; dynamic
batching groups cells from many requests.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog
import torch

from stainless.domain.served import MANIFEST, ServedManifest
from stainless.domain.served import InstanceKind as InstanceKind  # where export callers find it
from stainless.ml.export.heads import eager_models, served_models
from stainless.ml.export.onnx import OnnxModel, OnnxRejected, export_onnx
from stainless.ml.metrics.class_calibration import Scaling
from stainless.ml.models.mtmd import MultiTaskTranslator

log = structlog.get_logger(__name__)

ServedModel = Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]
"""A served model loaded back: a DIC batch in, one tensor or a tuple of them out."""


class Platform(StrEnum):
    """Triton's backend for a model, and with it the file in the version folder."""

    ONNX = "onnxruntime_onnx"
    TORCHSCRIPT = "pytorch_libtorch"

    @property
    def filename(self) -> str:
        return "model.onnx" if self is Platform.ONNX else "model.pt"


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # without the batch dimension; () is one value per cell; -1 any


def served_outputs(model: str, size: int, classes: int, mask_classes: int) -> tuple[Tensor, ...]:
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


WARMUP_CALLS = 2
"""Calls on a blank cell as a version loads, before it is ready: TorchScript's profiling
executor optimises a graph after the calls it profiles (Triton's ``model_warmup``, and the
in-process adapter's own)."""


def _warmup_block(inputs: tuple[Tensor, ...]) -> str:
    """Triton's ``model_warmup`` on zeros, for inputs of a fixed size (none otherwise)."""
    if any(d < 1 for t in inputs for d in t.dims):
        return ""
    values = " ".join(
        f'inputs {{ key: "{t.name}" value: {{ data_type: TYPE_FP32 '
        f"dims: [ {', '.join(str(d) for d in t.dims)} ] zero_data: true }} }}"
        for t in inputs
    )
    return (
        f'model_warmup [ {{ name: "blank cell" batch_size: 1 count: {WARMUP_CALLS} {values} }} ]\n'
    )


def model_config(
    name: str,
    *,
    inputs: tuple[Tensor, ...],
    outputs: tuple[Tensor, ...],
    max_batch_size: int,
    instance: InstanceKind,
    platform: Platform = Platform.TORCHSCRIPT,
    queue_delay_us: int = 2000,
    note: str | None = None,
) -> str:
    """The ``config.pbtxt`` text of one served model; ``note`` ends it as a comment.

    Every instance kind gets the same inputs, outputs, batch size, batching and warm-up; they
    differ in the backend (``platform``, or the python backend) and the instance group only."""
    kind = "KIND_GPU" if instance is InstanceKind.GPU else "KIND_CPU"
    backend = (
        'backend: "python"'
        if instance is InstanceKind.CPU_PYTHON
        else f'platform: "{platform.value}"'
    )
    input_blocks = ",\n".join(_tensor_block(t) for t in inputs)
    output_blocks = ",\n".join(_tensor_block(t) for t in outputs)
    comment = f"# {' '.join(note.split())}\n" if note else ""
    return (
        f'name: "{name}"\n'
        f"{backend}\n"
        f"max_batch_size: {max_batch_size}\n"
        # The version before the promoted one stays served: slides begun with it finish on it.
        "version_policy { latest { num_versions: 2 } }\n"
        f"input [\n{input_blocks}\n]\n"
        f"output [\n{output_blocks}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n"
        f"instance_group [ {{ kind: {kind} count: 1 }} ]\n"
        f"{_warmup_block(inputs)}"
        f"{comment}"
    )


PYTHON_MODEL = Path(__file__).with_name("python_model.py")
"""The python backend's ``model.py`` (``InstanceKind.CPU_PYTHON``)."""


def write_model(
    folder: Path, *, version: int, platform: Platform, instance: InstanceKind, config: str
) -> None:
    """Finish a served model whose ``platform`` file is in its version folder: remove what
    an earlier export left (the other format; ``model.py`` where the python backend does not
    serve it), add ``model.py`` where it does, and write ``config.pbtxt``."""
    version_folder = folder / str(version)
    for other in Platform:
        if other is not platform:
            (version_folder / other.filename).unlink(missing_ok=True)
    wrapper = version_folder / "model.py"
    if instance is InstanceKind.CPU_PYTHON:
        shutil.copyfile(PYTHON_MODEL, wrapper)
    else:
        wrapper.unlink(missing_ok=True)
    (folder / "config.pbtxt").write_text(config)


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
    onnx: bool = True,
    calibration: Scaling | None = None,
) -> list[Path]:
    """Export ``translator`` as the four served models under ``repo``; return their folders.

    Each model is tried as ONNX first (unless ``onnx`` is False) and kept as TorchScript
    when the ONNX export or its onnxruntime parity check fails (see
    :mod:`stainless.ml.export.onnx`). ``repo/stainless.json`` (the manifest) names the model
    ``name/version`` and lists the class names of the probabilities and the calibrated δ
    review threshold. ``calibration`` scales the class logits before their softmax (the
    manifest says whether the probabilities are calibrated).
    """
    manifest = ServedManifest(
        name=name,
        version=version,
        image_size=image_size,
        classes=tuple(classes),
        k=k,
        alpha=alpha,
        review_threshold=review_threshold,
        calibrated_probabilities=calibration is not None,
    )
    eager = eager_models(
        translator, image_size=image_size, k=k, alpha=alpha, calibration=calibration
    )
    scripted = served_models(
        translator, image_size=image_size, k=k, alpha=alpha, calibration=calibration
    )
    folders = [
        write_served_model(
            repo / served,
            eager=eager[served],
            scripted=module,
            outputs=served_outputs(served, image_size, len(classes), n_mask_classes),
            version=version,
            image_size=image_size,
            instance=instance,
            max_batch_size=max_batch_size,
            onnx=onnx,
        )
        for served, module in scripted.items()
    ]
    write_manifest(repo, manifest)
    return folders


def write_served_model(
    folder: Path,
    *,
    eager: torch.nn.Module,
    scripted: torch.jit.ScriptModule,
    outputs: tuple[Tensor, ...],
    version: int,
    image_size: int,
    instance: InstanceKind,
    max_batch_size: int,
    onnx: bool = True,
) -> Path:
    """One served model of a DIC batch in ``folder``: ONNX when the exporter handles
    ``eager`` and onnxruntime matches it (unless ``onnx`` is False), else ``scripted`` as
    TorchScript; the choice and its reason end ``config.pbtxt``. Returns ``folder``."""
    version_folder = folder / str(version)
    version_folder.mkdir(parents=True, exist_ok=True)
    platform, note = Platform.TORCHSCRIPT, "TorchScript: ONNX not tried (onnx=False)"
    if onnx:
        try:
            worst = export_onnx(
                eager,
                version_folder / Platform.ONNX.filename,
                input_shape=(1, image_size, image_size),
                n_outputs=len(outputs),
            )
            platform = Platform.ONNX
            note = f"ONNX: onnxruntime matches eager PyTorch within {worst:.2g}"
        except OnnxRejected as exc:
            note = f"TorchScript, not ONNX: {exc}"
    if platform is Platform.TORCHSCRIPT:
        scripted.save(str(version_folder / Platform.TORCHSCRIPT.filename))
    log.info("export.model", model=folder.name, platform=platform.value, reason=note)
    config = model_config(
        folder.name,
        inputs=(Tensor("INPUT__0", (1, image_size, image_size)),),
        outputs=outputs,
        max_batch_size=max_batch_size,
        instance=instance,
        platform=platform,
        note=note,
    )
    write_model(folder, version=version, platform=platform, instance=instance, config=config)
    return folder


_PLATFORM = re.compile(r'^platform:\s*"(?P<platform>[^"]+)"', re.MULTILINE)
_PYTHON_BACKEND = re.compile(r'^backend:\s*"python"', re.MULTILINE)


def served_platform(folder: Path) -> Platform | None:
    """The platform ``<folder>/config.pbtxt`` declares; None without a config or for the
    python backend (its ``model.py`` runs whichever model file is there)."""
    config = folder / "config.pbtxt"
    if not config.is_file():
        return None
    text = config.read_text()
    match = _PLATFORM.search(text)
    if match is None:
        if _PYTHON_BACKEND.search(text):
            return None
        raise ValueError(f"{config} declares no platform")
    return Platform(match["platform"])


def load_served(repo: Path, name: str, version: int = 1) -> ServedModel:
    """A served model back from the repository (parity checks, the local inference adapter).

    ONNX models run in onnxruntime on the CPU, TorchScript ones in PyTorch; either takes a
    DIC batch tensor and returns a tensor (one output) or a tuple of tensors.
    """
    folder = repo / name
    platform = served_platform(folder)
    candidates = [platform] if platform is not None else list(Platform)
    for candidate in candidates:
        path = folder / str(version) / candidate.filename
        if not path.is_file():
            continue
        if candidate is Platform.ONNX:
            return OnnxModel(path)
        with warnings.catch_warnings():  # deprecated, but what Triton's libtorch backend loads
            warnings.simplefilter("ignore", FutureWarning)
            module: torch.jit.ScriptModule = torch.jit.load(str(path), map_location="cpu")
        return module
    raise FileNotFoundError(f"no model {name!r} version {version} in {repo}")


def write_manifest(repo: Path, manifest: ServedManifest) -> Path:
    path = repo / MANIFEST
    repo.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path
