"""A stack of M independent MLPs with hand-written forward and backward passes.

Why hand-written: the papers' networks are tiny (300 points, width 100), so a PyTorch step is bound by
per-op overhead, not arithmetic. Autograd plus torch.optim costs about 15 more kernel launches and the
graph bookkeeping; here one training step is ~12 ops. Two layout choices keep those ops cheap:
- activations are [features, samples] (column layout): a [3, 100] x [100, 300] product is ~3x faster
  in MKL than the row layout's [300, 100] x [100, 3];
- each layer's bias is the last column of its weight matrix and every activation carries a row of
  ones, so the bias costs no extra op forward or backward.
Runs are stacked on a leading dimension (batched matmuls), so one code path serves a single job (M = 1)
and the batched launcher's groups. Weights follow nn.Linear's [out, in] convention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
INITS = ("glorot_normal", "torch_default", "glorot_uniform", "he_normal")


def layer_sizes(features: int, width: int, depth: int, classes: int) -> list[int]:
    return [features] + [width] * depth + [classes]


def init_weights(sizes: list[int], init: str, seed: int) -> list[torch.Tensor]:
    """One run's augmented weights [out, in + 1], drawn in float64 on the CPU from `seed`.

    Drawing on the CPU in float64 makes a run's start independent of device, dtype and of which other
    runs share its stack: a job alone and the same job in a batched group start identically.
    """
    g = torch.Generator().manual_seed(int(seed))
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if init == "glorot_normal":  # the authors' JAX code: Glorot-normal weights, N(0, 0.01^2) biases
            w = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * math.sqrt(2.0 / (fan_in + fan_out))
            b = torch.randn(fan_out, 1, generator=g, dtype=torch.float64) * 0.01
        elif init == "glorot_uniform":
            a = math.sqrt(6.0 / (fan_in + fan_out))
            w = (torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * a
            b = torch.zeros(fan_out, 1, dtype=torch.float64)
        elif init == "he_normal":
            w = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
            b = torch.zeros(fan_out, 1, dtype=torch.float64)
        elif init == "torch_default":  # nn.Linear.reset_parameters: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * bound
            b = (torch.rand(fan_out, 1, generator=g, dtype=torch.float64) * 2 - 1) * bound
        else:
            raise ValueError(f"model.init={init!r}: allowed values are {', '.join(INITS)}")
        layers.append(torch.cat([w, b], 1))
    return layers


def augment(x: torch.Tensor) -> torch.Tensor:
    """Samples [P, d] -> column layout with a row of ones [1, d + 1, P]."""
    return torch.cat([x.T, torch.ones(1, x.shape[0], dtype=x.dtype, device=x.device)], 0)[None].contiguous()


def _activate(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return z.relu_()
    if activation == "tanh":
        return z.tanh_()
    if activation == "sigmoid":
        return z.sigmoid_()
    if activation == "gelu":
        return z.copy_(torch.nn.functional.gelu(z))
    raise ValueError(f"model.activation={activation!r}: allowed values are {', '.join(ACTIVATIONS)}")


def _activation_backward_(grad: torch.Tensor, out: torch.Tensor, pre: torch.Tensor | None, activation: str) -> torch.Tensor:
    """grad *= act'(...), in place. Each derivative is one fused aten kernel computed from the layer's
    output (gelu needs its input); in place, because a fresh [M, width, P] result per step costs page
    faults: 122 -> 80 us for M = 24, width 100, P = 300 (float64, 2 cores)."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)
    if activation == "tanh":
        return torch.ops.aten.tanh_backward.grad_input(grad, out, grad_input=grad)
    if activation == "sigmoid":
        return torch.ops.aten.sigmoid_backward.grad_input(grad, out, grad_input=grad)
    return torch.ops.aten.gelu_backward.grad_input(grad, pre, grad_input=grad)


class MLPStack:
    """M MLPs of one architecture; layer l's weights are a [M, out, in + 1] tensor."""

    def __init__(self, weights: list[torch.Tensor], activation: str, run_sizes: list[list[int]] | None = None):
        self.weights = weights
        self.activation = activation
        self.runs = weights[0].shape[0]
        full = [weights[0].shape[2] - 1] + [w.shape[1] for w in weights]
        self.run_sizes = run_sizes or [full] * self.runs
        self._acts: dict[tuple, list[torch.Tensor]] = {}

    @classmethod
    def create(cls, sizes: list[int] | list[list[int]], init: str, seeds: list[int], activation: str, dtype, device) -> MLPStack:
        """Runs of one depth; `sizes` shared, or one list per run (narrower runs are zero-padded).

        Padding is exact for activations with act(0) = 0 (relu, tanh, gelu): a padded unit has zero
        input weights and bias, so its output is 0, its outgoing weights get zero gradient, and its
        incoming weights get zero gradient because its outgoing weights are zero. It stays 0 forever.
        """
        run_sizes = [list(sizes)] * len(seeds) if isinstance(sizes[0], int) else [list(s) for s in sizes]
        if len({len(s) for s in run_sizes}) != 1:
            raise ValueError("runs in one stack must have the same depth")
        if len({tuple(s) for s in run_sizes}) > 1 and not padding_is_exact(activation):
            raise ValueError(f"runs of different widths cannot share a stack with activation {activation}")
        full = [max(col) for col in zip(*run_sizes)]
        weights = [torch.zeros(len(seeds), o, i + 1, dtype=torch.float64) for i, o in zip(full[:-1], full[1:])]
        for m, (s, seed) in enumerate(zip(run_sizes, seeds)):
            for layer, w in enumerate(init_weights(s, init, seed)):
                weights[layer][m, : w.shape[0], : w.shape[1] - 1] = w[:, :-1]
                weights[layer][m, : w.shape[0], -1] = w[:, -1]  # the bias column is always last
        return cls([w.to(dtype=dtype, device=device) for w in weights], activation, run_sizes)

    def _buffers(self, xa: torch.Tensor) -> list[torch.Tensor]:
        """Preallocated augmented activations (their last row stays 1) for inputs of this shape."""
        key = (xa.shape[-1], xa.dtype, xa.device)
        if key not in self._acts:
            self._acts[key] = [
                torch.ones(self.runs, w.shape[1] + 1, xa.shape[-1], dtype=xa.dtype, device=xa.device) for w in self.weights[:-1]
            ]
        return self._acts[key]

    def forward(self, xa: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Outputs [M, C, P] for augmented inputs xa [1 or M, d + 1, P].

        Also returns what backward needs: each layer's augmented input (and, for gelu, its
        pre-activation). Buffers are reused between calls: a second forward of the same shape
        overwrites the first one's cache.
        """
        xa = xa.expand(self.runs, -1, -1)
        cache = [(xa, None)]
        h = xa
        for w, buf in zip(self.weights[:-1], self._buffers(xa)):
            z = buf[:, :-1]  # written in place: the ones row below it is the next layer's bias input
            torch.bmm(w, h, out=z)
            pre = z.clone() if self.activation == "gelu" else None
            _activate(z, self.activation)
            h = buf
            cache.append((h, pre))
        return torch.bmm(self.weights[-1], h), cache

    def backward(self, cache: list, grad_out: torch.Tensor, apply) -> None:
        """Backpropagate dLoss/dOutputs [M, C, P]; calls apply(layer, delta, layer_input) from the top.

        The gradient of layer l's weights is delta @ layer_input^T; `apply` either forms it or fuses it
        into the update. Each layer's delta for the layer below is computed before `apply` runs, so an
        in-place update never feeds into the backward pass.
        """
        delta = grad_out
        for layer in range(len(self.weights) - 1, -1, -1):
            h, _ = cache[layer]
            below = None
            if layer > 0:
                w = self.weights[layer][:, :, :-1]
                below = self._delta_buffer(layer, delta)
                torch.bmm(w.transpose(1, 2), delta, out=below)
                _activation_backward_(below, h[:, :-1], cache[layer][1], self.activation)
            apply(layer, delta, h)
            delta = below

    def _delta_buffer(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        """A reused [M, fan_in, P] buffer for the delta below `layer` (a second backward overwrites it)."""
        shape = (self.runs, self.weights[layer].shape[2] - 1, delta.shape[-1])
        key = ("delta", layer, shape, delta.dtype, delta.device)
        if key not in self._acts:
            self._acts[key] = [torch.empty(shape, dtype=delta.dtype, device=delta.device)]
        return self._acts[key][0]

    def gradients(self, cache: list, grad_out: torch.Tensor) -> list[torch.Tensor]:
        grads: list = [None] * len(self.weights)

        def collect(layer, delta, h):
            grads[layer] = torch.bmm(delta, h.transpose(1, 2))

        self.backward(cache, grad_out, collect)
        return grads

    def run_weights(self, m: int) -> list[torch.Tensor]:
        """Run m's own (unpadded) augmented weights."""
        sizes = self.run_sizes[m]
        out = []
        for layer, w in enumerate(self.weights):
            rows, cols = sizes[layer + 1], sizes[layer]
            out.append(torch.cat([w[m, :rows, :cols], w[m, :rows, -1:]], 1).detach().clone())
        return out


def padding_is_exact(activation: str) -> bool:
    return activation in ("relu", "tanh", "gelu")


def to_module(weights: list[torch.Tensor], activation: str) -> nn.Sequential:
    """One run's augmented weights as a plain nn.Sequential (Linear, activation, ..., Linear)."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}[activation]
    layers: list[nn.Module] = []
    for i, w in enumerate(weights):
        lin = nn.Linear(w.shape[1] - 1, w.shape[0], dtype=w.dtype, device=w.device)
        with torch.no_grad():
            lin.weight.copy_(w[:, :-1])
            lin.bias.copy_(w[:, -1])
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(act())
    return nn.Sequential(*layers)
