"""ONNX forms of the served models, checked against eager PyTorch with onnxruntime.

Triton's ONNX Runtime backend serves ``model.onnx`` (``platform: "onnxruntime_onnx"``)
with the same tensor names as the libtorch backend (``INPUT__0``, ``OUTPUT__i``), so
clients do not care which format a model is in. A model is exported as ONNX only when

1. an exporter handles its graph: the TorchScript-based one (``dynamo=False``) first,
   then the ``torch.export``-based one (which needs ``onnxscript``);
2. the graph draws no random numbers: onnxruntime's generator is not torch's, so the
   output could not match the seeded eager (and in-process) computation;
3. onnxruntime (CPU) matches eager PyTorch within ``tol`` on random batches of 1 and 3.

Otherwise :func:`export_onnx` raises :class:`OnnxRejected` with the reason, and the
repository writer keeps that model as TorchScript.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import torch
from torch import Tensor, nn

OPSET = 17
TOLERANCE = 1e-4
PARITY_BATCHES = (1, 3)
INPUT_NAME = "INPUT__0"
# Operators whose values onnxruntime draws with its own generator.
RANDOM_OPS = frozenset(
    {
        "Bernoulli",
        "Multinomial",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
    }
)


class OnnxRejected(RuntimeError):
    """A model cannot be served faithfully as ONNX; the message says why."""


def output_names(n_outputs: int) -> list[str]:
    return [f"OUTPUT__{i}" for i in range(n_outputs)]


def _export(
    module: nn.Module,
    example: Tensor,
    path: Path,
    outputs: list[str],
    dynamo: bool,
    spatial: bool,
) -> None:
    axes: dict[int, str] = {0: "batch"}
    if spatial:  # height and width of the input, and of every output map
        axes.update({2: "height", 3: "width"})
    with warnings.catch_warnings():  # tracer and deprecation notes of the exporters
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=dynamo,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={INPUT_NAME: axes}
            | {name: {k: f"{v}_{name}" if k else v for k, v in axes.items()} for name in outputs},
            external_data=False,
        )


def random_ops(model: onnx.ModelProto) -> set[str]:
    """The random-number operators anywhere in ``model`` (subgraphs included)."""
    found: set[str] = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.op_type in RANDOM_OPS:
                found.add(node.op_type)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    return found


class OnnxModel:
    """An exported ``model.onnx`` run by onnxruntime on the CPU, called like the module.

    Takes a float32 batch tensor; returns one tensor, or a tuple when the model has
    several outputs (as the TorchScript modules do).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]

    def __call__(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        results = self._session.run(self._outputs, {self._input: array})
        tensors = tuple(torch.from_numpy(np.asarray(r)) for r in results)
        return tensors[0] if len(tensors) == 1 else tensors


def _as_tuple(value: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    return (value,) if isinstance(value, Tensor) else tuple(value)


def parity(
    path: Path,
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batches: Sequence[int] = PARITY_BATCHES,
    seed: int = 0,
) -> float:
    """Largest absolute difference between onnxruntime and eager ``module`` over all
    outputs, on uniform [-1, 1) inputs of shape ``[b, *input_shape]`` for each ``b``.

    Raises:
        OnnxRejected: the number or shapes of the outputs differ.
    """
    served = OnnxModel(path)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batches:
        x = torch.rand((batch, *input_shape), generator=generator) * 2 - 1
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = _as_tuple(module(x))
        got = _as_tuple(served(x))
        if len(got) != len(expected):
            raise OnnxRejected(f"onnxruntime gives {len(got)} outputs, eager {len(expected)}")
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            if a.shape != b.shape:
                raise OnnxRejected(
                    f"OUTPUT__{i} at batch {batch}: onnxruntime shape {tuple(a.shape)}, "
                    f"eager {tuple(b.shape)}"
                )
            worst = max(worst, (a.double() - b.double()).abs().max().item())
    return worst


def export_onnx(
    module: nn.Module,
    path: Path,
    *,
    input_shape: tuple[int, ...],
    n_outputs: int,
    tol: float = TOLERANCE,
    spatial: bool = False,
) -> float:
    """Write ``module`` as ONNX to ``path`` (batch axis dynamic) and check it.

    ``module`` must be in eval mode; with ``spatial`` the height and width (axes 2 and 3)
    of its input and outputs are dynamic too (a fully convolutional network). Returns the
    largest difference to eager PyTorch.

    Raises:
        OnnxRejected: no exporter handles the graph, it draws random numbers, or
            onnxruntime differs from eager by more than ``tol``; ``path`` is removed.
    """
    if module.training:
        raise ValueError("export an eval-mode module (dropout and norms would differ)")
    outputs = output_names(n_outputs)
    example = torch.zeros((2, *input_shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    try:
        for dynamo in (False, True):
            try:
                _export(module, example, path, outputs, dynamo, spatial)
                break
            except Exception as exc:  # noqa: BLE001 - exporters raise many kinds; each is a reason
                exporter = "torch.export-based" if dynamo else "TorchScript-based"
                first = "".join(str(exc).strip().splitlines()[:1])[:300]
                failures.append(f"{exporter} exporter: {type(exc).__name__}: {first}")
                path.unlink(missing_ok=True)
        else:
            raise OnnxRejected("; ".join(failures))
        random = random_ops(onnx.load(str(path)))
        if random:
            raise OnnxRejected(
                f"the graph draws random numbers ({', '.join(sorted(random))}): onnxruntime's "
                "generator is not torch's, so outputs would not match the seeded eager model"
            )
        worst = parity(path, module, input_shape)
        if not worst <= tol:
            raise OnnxRejected(
                f"onnxruntime differs from eager PyTorch by {worst:.3g} (tolerance {tol:g})"
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return worst
