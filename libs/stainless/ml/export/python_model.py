"""A served model for Triton's python backend: copied as ``<model>/<version>/model.py``.

It runs the ``model.onnx`` (onnxruntime) or ``model.pt`` (TorchScript, torch) beside it on
the CPU, as Triton's native backends would: the requests of one dynamic batch are joined
into one batch, run once, and split again. With ``STAINLESS_NOISE_SEED`` in the server's
environment, a TorchScript model (the confidence head draws noise) runs each request alone
after seeding torch with it, so a request's δ and γ are what the in-process adapter
computes for it. Standalone on purpose: it runs in Triton's own Python environment (numpy,
and onnxruntime or torch), never imports Stainless, and reads tensor names from the model's
``config.pbtxt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

Run = Callable[[np.ndarray], list[np.ndarray]]
SEED_VARIABLE = "STAINLESS_NOISE_SEED"


def _onnx(path: Path) -> Run:
    import onnxruntime  # type: ignore[import-untyped]

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    names = [output.name for output in session.get_outputs()]
    return lambda batch: list(session.run(names, {feed: batch}))


def _torchscript(path: Path, seed: int | None) -> Run:
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            out = module(torch.from_numpy(batch))
        return [tensor.numpy() for tensor in (out if isinstance(out, tuple) else (out,))]

    return run


class TritonPythonModel:
    """The python backend's model (``initialize``, ``execute``)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self._input = config["input"][0]["name"]
        self._outputs = [output["name"] for output in config["output"]]
        folder = Path(args["model_repository"]) / args["model_version"]
        onnx = folder / "model.onnx"
        seed = os.environ.get(SEED_VARIABLE)
        self._alone = bool(seed) and not onnx.is_file()  # seeded noise: a request at a time
        self._run = (
            _onnx(onnx)
            if onnx.is_file()
            else _torchscript(folder / "model.pt", int(seed) if seed else None)
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [
            pb_utils.get_input_tensor_by_name(request, self._input).as_numpy()
            for request in requests
        ]
        if self._alone:
            return [self._response(self._run(batch), 0, len(batch)) for batch in batches]
        outputs = self._run(np.concatenate(batches))
        responses, start = [], 0
        for batch in batches:
            responses.append(self._response(outputs, start, start + len(batch)))
            start += len(batch)
        return responses

    def _response(self, outputs: list[np.ndarray], start: int, end: int) -> Any:
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(output[start:end]))
            for name, output in zip(self._outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
