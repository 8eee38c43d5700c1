"""An MLServer runtime that serves one model of a Triton model repository, ONNX or TorchScript.

MLServer speaks Triton's inference protocol (KServe v2), so the Triton adapter is tested
against it. This file runs inside MLServer's own virtual environment (``.venv-mlserver``),
never in the main code: torch and onnxruntime come from the main venv through a ``.pth``.

The model's ``config.pbtxt`` platform says what to load, as Triton's backends would:
``onnxruntime_onnx`` runs ``<version>/model.onnx`` in onnxruntime (CPU),
``pytorch_libtorch`` runs ``<version>/model.pt`` in PyTorch.

model-settings.json ``inputs`` gives the shape of INPUT__0 (-1 for the batch); a request
of another shape is refused with a 400 (``InferenceError``). Its parameters:
    uri: the model's folder in the repository (``<repo>/<model>``).
    version: the version folder to load (``<uri>/<version>/``).
    extra.seed: the torch noise seed set before every request (default 0), as the
        in-process adapter does, so both give the same δ for the same batch.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse

INPUT_NAME = "INPUT__0"
MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "pytorch_libtorch": "model.pt"}
_PLATFORM = re.compile(r'^platform:\s*"(?P<platform>[^"]+)"', re.MULTILINE)

Runner = Callable[[np.ndarray], list[np.ndarray]]


def _platform(folder: Path) -> str:
    config = folder / "config.pbtxt"
    match = _PLATFORM.search(config.read_text()) if config.is_file() else None
    if match is None or match["platform"] not in MODEL_FILES:
        raise InferenceError(f"{config} declares none of the platforms {sorted(MODEL_FILES)}")
    return match["platform"]


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    def run(array: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(r) for r in session.run(outputs, {INPUT_NAME: array})]

    return run


def _torchscript_runner(path: Path, seed: int) -> Runner:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(array: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            result = module(torch.from_numpy(array))
        tensors = result if isinstance(result, tuple | list) else (result,)
        return [t.detach().float().numpy() for t in tensors]

    return run


class TritonRepositoryModel(MLModel):
    async def load(self) -> bool:
        parameters = self.settings.parameters
        if parameters is None or not parameters.uri or not parameters.version:
            raise InferenceError(f"{self.name}: parameters.uri and parameters.version are needed")
        folder = Path(parameters.uri)
        platform = _platform(folder)
        path = folder / str(parameters.version) / MODEL_FILES[platform]
        extra = parameters.extra or {}
        seed = int(extra.get("seed", 0))
        self._run = (
            _onnx_runner(path)
            if platform == "onnxruntime_onnx"
            else (_torchscript_runner(path, seed))
        )
        self._lock = threading.Lock()
        declared = [t for t in self.settings.inputs or [] if t.name == INPUT_NAME]
        self._shape = list(declared[0].shape) if declared else [-1, 1, -1, -1]
        return True

    def _check_shape(self, shape: list[int]) -> None:
        fits = len(shape) == len(self._shape) and all(
            want in (-1, got) for want, got in zip(self._shape, shape, strict=True)
        )
        if not fits or shape[0] < 1:
            raise InferenceError(f"{INPUT_NAME} must be {self._shape}, got {shape}")

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = [i for i in payload.inputs if i.name == INPUT_NAME]
        if len(inputs) != 1:
            raise InferenceError(f"{self.name} takes exactly one input named {INPUT_NAME}")
        try:
            array = np.asarray(NumpyCodec.decode_input(inputs[0]), dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"{INPUT_NAME} cannot be read: {exc}") from None
        self._check_shape(list(array.shape))
        try:
            with self._lock:
                results = self._run(np.ascontiguousarray(array))
        except Exception as exc:  # noqa: BLE001 - torch or onnxruntime rejects the input
            raise InferenceError(f"{self.name} cannot run on {list(array.shape)}: {exc}") from None
        outputs = [
            NumpyCodec.encode_output(f"OUTPUT__{i}", r.astype(np.float32, copy=False))
            for i, r in enumerate(results)
        ]
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=outputs,
        )
