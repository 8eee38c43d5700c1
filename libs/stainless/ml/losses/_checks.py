"""Shared input checks of the loss functions (clear ValueErrors instead of broadcasting)."""

from __future__ import annotations

import math

from torch import Tensor


def shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_tensor(name: str, t: object, *, floating: bool = True) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty, shape {shape(t)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    return t


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    check_tensor(name_a, a)
    check_tensor(name_b, b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {shape(a)} and {name_b} {shape(b)} must have the same shape")


def check_weight(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {value}")
