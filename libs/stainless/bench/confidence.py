"""Confidence throughput: k corrupted latents decoded as one batch vs k+1 full passes.

For each model size, cells per second of stain + classify + confidence the batched way
(encode once; the noise masked to the white cell the segmentation head finds; the clean
and the k corrupted codes decoded in two calls; the classifier on the same code) and the
naive way (the same noise, but each of the k + 1 outputs a full forward pass: encode,
decode), their ratio, and the batched path's achieved GFLOP/s beside a large float32
matmul's GFLOP/s in the same process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from stainless.ml.confidence.adapters import StainingLatentModel, predicted_foreground
from stainless.ml.confidence.noise import naive_whole_latent_confidence, whole_latent_confidence
from stainless.ml.models.configs import MultiTaskConfig
from stainless.ml.models.mtmd import build_multitask

Progress = Callable[[], None]


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a ``size``² float32 matmul (the machine's practical peak)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def _one_size(
    config: MultiTaskConfig, *, cells: int, k: int, seed: int, on_step: Progress | None
) -> dict[str, float]:
    torch.manual_seed(seed)
    translator = build_multitask(config).eval()
    model = StainingLatentModel(translator)
    images = torch.rand(cells, 1, config.image_size, config.image_size) * 2 - 1

    def foreground(h: torch.Tensor) -> torch.Tensor:
        return predicted_foreground(translator, h)

    def run(confidence: Any, x: torch.Tensor) -> float:
        generator = torch.Generator().manual_seed(seed)
        result = confidence(model, x, k=k, foreground=foreground, generator=generator)
        torch.softmax(translator.classify(result.latent), dim=1)
        return float(result.delta)

    with torch.no_grad():
        run(whole_latent_confidence, images[:1])  # warm-up
        with FlopCounterMode(display=False) as counter:
            run(whole_latent_confidence, images[:1])
        flops = counter.get_total_flops()
        timings = {}
        for name, confidence in (
            ("batched", whole_latent_confidence),
            ("naive", naive_whole_latent_confidence),
        ):
            started = time.perf_counter()
            for index in range(cells):
                run(confidence, images[index : index + 1])
                if on_step:
                    on_step()
            timings[name] = time.perf_counter() - started
    return {
        "cells_per_s": cells / timings["batched"],
        "naive_cells_per_s": cells / timings["naive"],
        "speedup": timings["naive"] / timings["batched"],
        "gflops": flops * cells / timings["batched"] / 1e9,
    }


def run_confidence_bench(
    *, cells: int = 4, k: int = 10, seed: int = 0, on_step: Progress | None = None
) -> dict[str, Any]:
    peak = matmul_gflops()
    result: dict[str, Any] = {"k": k, "cells": cells, "matmul_gflops": round(peak, 2)}
    for name, config in (("tiny", MultiTaskConfig.tiny()), ("thesis", MultiTaskConfig.thesis())):
        figures = _one_size(config, cells=cells, k=k, seed=seed, on_step=on_step)
        for key, value in figures.items():
            result[f"{name}_{key}"] = round(value, 3)
        result[f"{name}_fraction_of_matmul_peak"] = round(figures["gflops"] / peak, 3)
    result["speedup"] = result["thesis_speedup"]
    result["fraction_of_matmul_peak"] = result["thesis_fraction_of_matmul_peak"]
    return result
