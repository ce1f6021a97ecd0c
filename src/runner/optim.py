"""Optimisers written for stacked parameters [M, out, in + 1] (one update rule, M runs at once).

gd / sgd (heavy-ball momentum, PyTorch's convention v <- beta v + g, w <- w - lr v): the learning
rate is folded into the output gradient by the loss head, so the update needs no scaling op and plain
GD fuses "gradient then step" into one in-place batched matmul. Adam is not scale-invariant in eps, so
it receives the raw gradient and applies its per-run learning rate itself.
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("gd", "sgd", "adam")


class StackedOptimizer:
    folds_lr = True  # the loss head multiplies the output gradient by lr

    def __init__(self, weights: list[torch.Tensor], lr: torch.Tensor, momentum: float = 0.0):
        self.weights = weights
        self.lr = lr  # [M]
        self.momentum = momentum
        self.velocity = [torch.zeros_like(w) for w in weights] if momentum else None
        self.t = 0

    def apply(self, layer: int, delta: torch.Tensor, h: torch.Tensor) -> None:
        w = self.weights[layer]
        if self.velocity is None:
            w.baddbmm_(delta, h.transpose(1, 2), alpha=-1.0)
            return
        v = self.velocity[layer]
        v.mul_(self.momentum).baddbmm_(delta, h.transpose(1, 2))
        w.sub_(v)

    def state(self) -> dict:
        return {"velocity": self.velocity, "t": self.t}

    def load_state(self, state: dict) -> None:
        if state["velocity"] is not None:
            for v, s in zip(self.velocity, state["velocity"]):
                v.copy_(s)
        self.t = state["t"]


class StackedAdam(StackedOptimizer):
    folds_lr = False

    def __init__(self, weights, lr, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(weights, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [torch.zeros_like(w) for w in weights]
        self.v = [torch.zeros_like(w) for w in weights]
        self.lr3 = lr[:, None, None]

    def apply(self, layer: int, delta: torch.Tensor, h: torch.Tensor) -> None:
        if layer == len(self.weights) - 1:
            self.t += 1  # backward visits the top layer first: one tick per step
        g = torch.bmm(delta, h.transpose(1, 2))
        m, v = self.m[layer], self.v[layer]
        m.lerp_(g, 1 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        c1 = 1 - self.beta1**self.t
        c2 = 1 - self.beta2**self.t
        denom = (v / c2).sqrt_().add_(self.eps)
        self.weights[layer].addcdiv_(m * (self.lr3 / c1), denom, value=-1.0)

    def state(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state(self, state: dict) -> None:
        for dst, src in zip(self.m + self.v, state["m"] + state["v"]):
            dst.copy_(src)
        self.t = state["t"]


def make_optimizer(name: str, weights: list[torch.Tensor], lr: torch.Tensor, cfg) -> StackedOptimizer:
    if name in ("gd", "sgd"):
        return StackedOptimizer(weights, lr, float(cfg["momentum"]))
    if name == "adam":
        return StackedAdam(weights, lr, float(cfg["beta1"]), float(cfg["beta2"]), float(cfg["eps"]))
    raise ValueError(f"optim.name={name!r}: allowed values are {', '.join(OPTIMIZERS)}")


def stability_threshold(name: str, lr: float, momentum: float, beta1: float = 0.9) -> float:
    """Largest sharpness at which the optimiser is stable on a quadratic.

    GD: 2/lr; heavy-ball momentum beta: (2 + 2 beta)/lr. Adam: (2 + 2 beta1) / ((1 - beta1) lr), a bound
    on the *preconditioned* sharpness lambda_max(P^-1 H) (Cohen et al. 2022, adaptive edge of stability).
    """
    if name == "adam":
        return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)
    return (2.0 + 2.0 * momentum) / lr
