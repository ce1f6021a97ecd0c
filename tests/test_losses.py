"""Each loss against a direct hand computation, and the hand-written gradients against autograd."""

import pytest
import torch

from runner.losses import LOSSES, LossHead
from runner.model import MLPStack, augment, layer_sizes, to_module

P, C, D = 12, 3, 2
torch.manual_seed(0)
X = torch.randn(P, D, dtype=torch.float64)
Y = torch.tensor([0, 1, 2, 0, 1, 2, 2, 2, 0, 1, 1, 0])
GAMMA = torch.tensor([[2.5, 0.3, 0.2]], dtype=torch.float64)  # [M=1, C], sums to C


def hand_loss(name: str, f: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """METHOD.md section 3, written out sample by sample. f: [P, C] outputs."""
    total = torch.zeros((), dtype=torch.float64)
    for j in range(P):
        e = torch.zeros(C, dtype=torch.float64)
        e[Y[j]] = 1
        nll = -torch.log_softmax(f[j], 0)[Y[j]]
        sq = ((f[j] - e) ** 2).sum()
        total = (
            total
            + {
                "ce": nll,
                "dce": gamma[Y[j]] * nll,
                "mse": sq,
                "dmse1": gamma[Y[j]] * sq,
                "dmse2": (gamma * (f[j] - e) ** 2).sum(),
            }[name]
        )
    return total / P


def stack_and_outputs(width=5, depth=2, activation="tanh", seeds=(3,)):
    stack = MLPStack.create(layer_sizes(D, width, depth, C), "glorot_normal", list(seeds), activation, torch.float64, "cpu")
    out, cache = stack.forward(augment(X))
    return stack, out, cache


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_values_match_hand_computation(name):
    stack, out, _ = stack_and_outputs()
    head = LossHead(name, Y, C, torch.float64)
    gamma = GAMMA if head.weighting != "none" else torch.ones_like(GAMMA)
    losses = torch.zeros(1, 1, 2, dtype=torch.float64)
    head.step(out.clone(), head.output_weights(gamma[None], torch.ones(1, dtype=torch.float64))[0], head.loss_mix(gamma[None])[0], losses)
    f = out[0].T
    static = {"ce": "ce", "dce": "ce", "mse": "mse", "dmse1": "mse", "dmse2": "mse"}[name]
    assert losses[0, 0, 0].item() == pytest.approx(hand_loss(static, f, gamma[0]).item(), rel=1e-12)
    assert losses[0, 0, 1].item() == pytest.approx(hand_loss(name, f, gamma[0]).item(), rel=1e-12)
    ev = head.evaluate(out, Y, gamma)
    assert ev["dyn_loss"].item() == pytest.approx(hand_loss(name, f, gamma[0]).item(), rel=1e-12)
    assert ev["acc"].item() == pytest.approx((f.argmax(1) == Y).double().mean().item())


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_hand_written_gradients_match_autograd(name, activation):
    stack, out, cache = stack_and_outputs(activation=activation)
    head = LossHead(name, Y, C, torch.float64)
    gamma = GAMMA if head.weighting != "none" else torch.ones_like(GAMMA)
    grad_out = head.step(
        out,
        head.output_weights(gamma[None], torch.ones(1, dtype=torch.float64))[0],
        head.loss_mix(gamma[None])[0],
        torch.zeros(1, 1, 2, dtype=torch.float64),
    )
    grads = stack.gradients(cache, grad_out)

    module = to_module(stack.run_weights(0), activation)
    loss = hand_loss(name, module(X), gamma[0])
    loss.backward()
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    for g, lin in zip(grads, linears):
        expected = torch.cat([lin.weight.grad, lin.bias.grad[:, None]], 1)
        assert torch.allclose(g[0], expected, rtol=1e-10, atol=1e-12)


def test_stacked_runs_are_independent():
    """A run's outputs and gradients in a stack equal the same run alone."""
    stack, out, cache = stack_and_outputs(seeds=(3, 4, 5))
    alone, out1, cache1 = stack_and_outputs(seeds=(4,))
    assert torch.equal(out[1], out1[0])
    head = LossHead("dce", Y, C, torch.float64)
    g3 = GAMMA.expand(3, C)
    one = torch.ones(3, dtype=torch.float64)
    grads = stack.gradients(
        cache, head.step(out, head.output_weights(g3[None], one)[0], head.loss_mix(g3[None])[0], torch.zeros(3, 1, 2, dtype=torch.float64))
    )
    grads1 = alone.gradients(
        cache1,
        head.step(
            out1, head.output_weights(GAMMA[None], one[:1])[0], head.loss_mix(GAMMA[None])[0], torch.zeros(1, 1, 2, dtype=torch.float64)
        ),
    )
    for a, b in zip(grads, grads1):
        assert torch.allclose(a[1], b[0], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["dce", "dmse1", "dmse2"])
def test_zero_residual_fit_is_a_zero_of_every_dynamical_loss(name):
    """Outputs equal to the one-hot targets (MSE) / huge logit margins (CE, whose zero is asymptotic):
    every dynamical loss and its gradient vanish there, as the static loss does."""
    head = LossHead(name, Y, C, torch.float64)
    onehot = torch.nn.functional.one_hot(Y, C).double().T[None]
    out = onehot.clone() if head.family == "mse" else onehot * 60.0
    losses = torch.zeros(1, 1, 2, dtype=torch.float64)
    grad = head.step(out, head.output_weights(GAMMA[None], torch.ones(1, dtype=torch.float64))[0], head.loss_mix(GAMMA[None])[0], losses)
    assert losses[0, 0, 1].abs().item() < 1e-20
    assert grad.abs().max().item() < 1e-20
    # and a small perturbation of the outputs gives a strictly positive loss: it is a minimum
    bumped = torch.zeros(1, 1, 2, dtype=torch.float64)
    nearby = out - 0.1 * onehot if head.family == "mse" else out / 20  # CE: a finite margin
    head.step(nearby, head.output_weights(GAMMA[None], torch.ones(1, dtype=torch.float64))[0], head.loss_mix(GAMMA[None])[0], bumped)
    assert bumped[0, 0, 1].item() > 0
