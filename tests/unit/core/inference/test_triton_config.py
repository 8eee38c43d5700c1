"""What the inference stage needs from a served model's configuration (Triton's JSON form)."""

from __future__ import annotations

from typing import Any

from stainless.core.inference.triton import config_problems
from stainless.domain.served import ServedManifest

MANIFEST = ServedManifest(
    name="mtmd-tiny",
    version=1,
    image_size=64,
    classes=("A", "B", "C"),
    k=4,
    alpha=3.0,
    review_threshold=0.5,
)


def _tensor(name: str, dims: tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "data_type": "TYPE_FP32", "dims": [str(d) for d in dims]}


def _config(size: int = 64, classes: int = 3, max_batch: int = 32) -> dict[str, Any]:
    """As Triton's get_model_config answers (gRPC as_json: dims as strings)."""
    tensor = _tensor
    return {
        "max_batch_size": max_batch,
        "input": [tensor("INPUT__0", (1, size, size))],
        "output": [
            tensor("OUTPUT__0", (3, size, size)),
            tensor("OUTPUT__1", (1,)),
            tensor("OUTPUT__2", (1,)),
            tensor("OUTPUT__3", (size, size)),
            tensor("OUTPUT__4", (classes,)),
        ],
    }


def test_the_exported_configuration_fits() -> None:
    assert config_problems(_config(), MANIFEST, max_batch=32) == []


def test_every_difference_is_named() -> None:
    problems = config_problems(_config(size=128, classes=7, max_batch=8), MANIFEST, max_batch=16)
    assert problems == [
        "input INPUT__0 is TYPE_FP32 [1, 128, 128], expected TYPE_FP32 [1, 64, 64] "
        "(the manifest's image size)",
        "output OUTPUT__0 has dims [3, 128, 128], expected [3, 64, 64]",
        "output OUTPUT__3 has dims [128, 128], expected [64, 64]",
        "output OUTPUT__4 has dims [7], expected [3]",
        "max_batch_size 8 is below the stage's micro-batch of 16 (STAINLESS_INFERENCE__MAX_BATCH)",
    ]


def test_missing_and_renamed_tensors() -> None:
    config = _config()
    config["input"][0]["name"] = "x"
    config["output"] = config["output"][:4]
    problems = config_problems(config, MANIFEST, max_batch=1)
    assert problems[0] == "inputs ['x'], expected ['INPUT__0']"
    assert problems[1].startswith("outputs ['OUTPUT__0', 'OUTPUT__1', 'OUTPUT__2', 'OUTPUT__3']")
