"""The five losses of METHOD.md section 3 as gradient heads for the hand-written backward pass.

Every loss here is  (1/P) sum_c Gamma_c(t) s_c  for per-class sums s_c, and the static loss is the
same sum with Gamma = 1:
- ce / dce: s_c = sum over samples of class c of -log softmax(f)_c      (sample weighting)
- mse / dmse1: s_c = sum over samples of class c of |f - e_y|^2         (sample weighting)
- dmse2: s_c = sum over all samples of (f_c - [c = y])^2                (output weighting)
MSE uses no 1/2: (1/P) sum_j sum_i (f_i - [i = y_j])^2, as METHOD.md writes it.
So one [M, C] tensor per step gives both the static and the dynamical loss, and the gradient with
respect to the outputs is a residual times a per-sample (or per-output) weight that the trainer
precomputes for a chunk of steps, with the learning rate folded in where the optimiser allows.
"""

from __future__ import annotations

import torch

LOSSES = {  # name -> (family, weighting); weighting "none" means static: Gamma = 1 always
    "ce": ("ce", "none"),
    "dce": ("ce", "sample"),
    "mse": ("mse", "none"),
    "dmse1": ("mse", "sample"),
    "dmse2": ("mse", "output"),
}


def stack_loss(names: list[str]) -> str:
    """The head a stack of runs trains with: a static loss is its dynamical twin with Gamma = 1
    (ce = dce at A = 1, mse = dmse1 at A = 1: the same arithmetic), so ce and dce runs share a stack."""
    twins = {"ce": "dce", "mse": "dmse1"}
    heads = {twins.get(n, n) for n in names}
    if len(heads) != 1:
        raise ValueError(f"losses {sorted(set(names))} cannot share a stack")
    return names[0] if len(set(names)) == 1 else heads.pop()


class LossHead:
    """Per-step loss values and output gradients for a stack of M runs on one labelled batch."""

    def __init__(self, name: str, labels: torch.Tensor, classes: int, dtype: torch.dtype):
        if name not in LOSSES:
            raise ValueError(f"loss.name={name!r}: allowed values are {', '.join(LOSSES)}")
        self.name = name
        self.family, self.weighting = LOSSES[name]
        self.classes = classes
        self.set_labels(labels, dtype)

    def set_labels(self, labels: torch.Tensor, dtype: torch.dtype) -> None:
        """labels: [P] shared by all runs, or [M, P] (minibatches)."""
        onehot = torch.nn.functional.one_hot(labels, self.classes).to(dtype)  # [.., P, C]
        self.onehot_pc = onehot if onehot.dim() == 3 else onehot[None]  # [1|M, P, C]
        self.targets = self.onehot_pc.transpose(1, 2).contiguous()  # [1|M, C, P]
        self.samples = labels.shape[-1]

    def output_weights(self, gamma: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Weights that turn a residual into dLoss/dOutputs, for gamma [K, M, C] and scale [M].

        Sample weighting: [K, M, 1, P] = Gamma_{y_j} * scale / P; output weighting: [K, M, C, 1].
        MSE's derivative brings a factor 2. Static losses use Gamma = 1 (the caller passes ones).
        """
        factor = (2.0 if self.family == "mse" else 1.0) / self.samples
        s = scale[None, :, None] * factor  # [1, M, 1]
        if self.weighting == "output":
            return (gamma * s)[..., None]
        per_sample = torch.matmul(gamma[:, :, None, :], self.onehot_pc.transpose(1, 2)[None])  # [K, M, 1, P]
        return per_sample * s[..., None]

    def loss_mix(self, gamma: torch.Tensor) -> torch.Tensor:
        """[K, M, C, 2]: maps the per-class sums s to (static, dynamical) loss."""
        sign = -1.0 if self.family == "ce" else 1.0
        return torch.stack([torch.ones_like(gamma), gamma], -1) * (sign / self.samples)

    def step(self, out: torch.Tensor, weights: torch.Tensor, mix: torch.Tensor, losses_out: torch.Tensor) -> torch.Tensor:
        """Gradient dLoss/dOutputs (scaled as in output_weights) for outputs [M, C, P].

        Writes (static, dynamical) loss of each run into losses_out [M, 1, 2] without a host sync.
        """
        y = self.targets
        if self.family == "ce":
            logp = out.log_softmax(1)
            grad = logp.exp().sub_(y).mul_(weights)
            sums = (logp * y).sum(2)  # [M, C]: minus the per-class cross-entropy sums
        else:
            grad = out - y
            sq = grad * grad
            grad.mul_(weights)
            if self.weighting == "output":
                sums = sq.sum(2)
            else:
                sums = torch.bmm(sq.sum(1, keepdim=True), self.onehot_pc.expand(out.shape[0], -1, -1))[:, 0]
        torch.bmm(sums[:, None, :], mix, out=losses_out)
        return grad

    def evaluate(self, out: torch.Tensor, labels: torch.Tensor, gamma: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss (static and dynamical), accuracy and per-class accuracy, each [M] (per class [M, C])."""
        onehot = torch.nn.functional.one_hot(labels, self.classes).to(out.dtype).T[None]  # [1, C, P]
        if self.family == "ce":
            per = -(out.log_softmax(1) * onehot)  # [M, C, P], nonzero only at the label
        else:
            per = (out - onehot) ** 2
        if self.weighting == "output":
            sums = per.sum(2)
        else:
            sums = per.sum(1) @ onehot[0].T  # [M, C]
        n = labels.shape[0]
        correct = (out.argmax(1) == labels[None]).to(out.dtype)  # [M, P]
        per_class_n = onehot[0].sum(1).clamp_min(1)
        return {
            "loss": sums.sum(1) / n,
            "dyn_loss": (sums * gamma).sum(1) / n,
            "acc": correct.mean(1),
            "acc_class": (correct @ onehot[0].T) / per_class_n,
        }
