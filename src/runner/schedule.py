"""Class weights Gamma_i(t) of the dynamical losses (METHOD.md section 2).

Window k = floor(t / T) emphasises class c = k mod C. Within the window the emphasised class's raw
weight rises from 1 to A and back (a triangle, or a sine hump); every other class has raw weight 1.
Normalised, the weights sum to C. Everything is vectorised over steps and over runs, because the
trainer computes the weights of a whole chunk of steps for a whole stack of runs in one go.
"""

from __future__ import annotations

import torch

SHAPES = ("triangle", "sine")


def raw_weight(tau: torch.Tensor, A: torch.Tensor, T: torch.Tensor, shape: str) -> torch.Tensor:
    """Raw weight of the emphasised class at local time tau in [0, T)."""
    x = tau / T
    if shape == "triangle":
        hump = 1.0 - (1.0 - 2.0 * x).abs()
    elif shape == "sine":
        hump = torch.sin(torch.pi * x)
    else:
        raise ValueError(f"loss.shape={shape!r}: allowed values are {', '.join(SHAPES)}")
    return 1.0 + (A - 1.0) * hump


def class_weights(
    steps: torch.Tensor,
    classes: int,
    A: torch.Tensor,
    T: torch.Tensor,
    *,
    shape: str = "triangle",
    normalize: bool = True,
    phase: float | torch.Tensor = 0.0,
    static_from: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gamma for every (step, run, class): a [K, M, C] tensor.

    steps: [K] optimiser steps (0-based). A, T: [M] per-run amplitude and period (float).
    phase: fraction of a window to start at (0.5 starts at the middle of the first window).
    static_from: [M] step from which the loss is static (Gamma = 1), or +inf for never.
    """
    t = steps.to(A.dtype)[:, None] + torch.as_tensor(phase, dtype=A.dtype, device=A.device) * T  # [K, M]
    window = torch.floor(t / T)
    tau = t - window * T
    emphasised = torch.remainder(window, classes).long()  # [K, M]
    w = raw_weight(tau, A, T, shape)  # [K, M]
    if static_from is not None:
        w = torch.where(steps[:, None].to(A.dtype) >= static_from, torch.ones_like(w), w)
    one_hot = torch.nn.functional.one_hot(emphasised, classes).to(A.dtype)  # [K, M, C]
    raw = 1.0 + one_hot * (w - 1.0)[..., None]
    if normalize:
        raw = raw * (classes / raw.sum(-1, keepdim=True))
    return raw


def peak_weight(A: float, classes: int) -> float:
    """Largest normalised weight: C * A / (A + C - 1)."""
    return classes * A / (A + classes - 1)
