"""An MLServer runtime that serves one TorchScript model of a Triton model repository.

MLServer speaks Triton's inference protocol (KServe v2), so the Triton adapter is tested
against it. This file runs inside MLServer's own virtual environment (``.venv-mlserver``),
never in the main code: torch comes from the main venv through a ``.pth`` file.

model-settings.json ``inputs`` gives the shape of INPUT__0 (-1 for the batch); a request
of another shape is refused with a 400 (``InferenceError``). Its parameters:
    uri: the model's folder in the repository (``<repo>/<model>``).
    version: the version folder to load (``<uri>/<version>/model.pt``).
    extra.seed: the noise seed set before every request (default 0), as the in-process
        adapter does, so both give the same δ for the same batch.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse

INPUT_NAME = "INPUT__0"


class TorchScriptModel(MLModel):
    async def load(self) -> bool:
        parameters = self.settings.parameters
        if parameters is None or not parameters.uri or not parameters.version:
            raise InferenceError(f"{self.name}: parameters.uri and parameters.version are needed")
        path = Path(parameters.uri) / str(parameters.version) / "model.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self._module = torch.jit.load(str(path), map_location="cpu").eval()
        extra = parameters.extra or {}
        self._seed = int(extra.get("seed", 0))
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
        x = torch.from_numpy(np.ascontiguousarray(array))
        try:
            with self._lock, torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed)
                result = self._module(x)
        except RuntimeError as exc:  # the scripted module rejects the shape
            raise InferenceError(f"{self.name} cannot run on {list(array.shape)}: {exc}") from None
        tensors = result if isinstance(result, tuple | list) else (result,)
        outputs = [
            NumpyCodec.encode_output(f"OUTPUT__{i}", t.detach().float().numpy())
            for i, t in enumerate(tensors)
        ]
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=outputs,
        )
