"""Sharpness: the runner's lambda_max against the exact Hessian of the same loss at the same weights.

The reference Hessians are autograd's, of the losses written out from METHOD.md section 3 over the
flattened parameters of one run: nothing of losses.py, model.py's backward or sharpness.py is reused.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from runner.app import job_from_config
from runner.data import data_from_config, make_data
from runner.losses import LossHead
from runner.model import MLPStack, augment, layer_sizes
from runner.optim import StackedAdam, StackedOptimizer, stability_threshold
from runner.schedule import class_weights
from runner.sharpness import FlatLayout, Lanczos, SharpnessMonitor, StackHessian
from runner.trainer import Job, train_jobs

CONF = Path(__file__).resolve().parents[1] / "src" / "runner" / "conf"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # from torch.func
ACT = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": torch.nn.functional.gelu}
BASE = ["wandb.mode=disabled", "train.progress=false", "model.width=6", "dataset.n_train=20", "dataset.n_val=10", "loss.T=40"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def reference_loss(flat, sizes, activation, name, gamma, x, y):
    """One run's loss at flattened weights (each layer [out, in + 1], bias last), per METHOD.md."""
    h, start = x, 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = flat[start : start + fan_out * (fan_in + 1)].view(fan_out, fan_in + 1)
        start += w.numel()
        h = h @ w[:, :-1].T + w[:, -1]
        if i < len(sizes) - 2:
            h = ACT[activation](h)
    onehot = torch.nn.functional.one_hot(y, gamma.shape[0]).to(h.dtype)
    if name in ("ce", "dce"):
        per = -(h.log_softmax(1) * onehot).sum(1)
        return (per * (gamma[y] if name == "dce" else 1)).mean()
    sq = (h - onehot) ** 2
    if name == "mse":
        return sq.sum(1).mean()
    if name == "dmse1":
        return (gamma[y] * sq.sum(1)).mean()
    return (sq * gamma).sum(1).mean()  # dmse2


def exact_hessian(layers, sizes, activation, name, gamma, x, y) -> torch.Tensor:
    flat = torch.cat([w.reshape(-1) for w in layers]).detach()
    return torch.func.hessian(lambda f: reference_loss(f, sizes, activation, name, gamma, x, y))(flat)


def small_problem(activation="relu", depth=1, seeds=(0, 1), width=6):
    data = make_data("spiral", 3, 20, 10, 0.2, 0).to("cpu", torch.float64)
    sizes = layer_sizes(2, width, depth, 3)
    stack = MLPStack.create(sizes, "glorot_normal", list(seeds), activation, torch.float64, "cpu")
    return data, sizes, stack


def peak_gamma(M: int) -> torch.Tensor:
    """Gamma at the peak of the first window (tau = T / 2), class 0 emphasised: ~(2.92, 0.04, 0.04)."""
    g = class_weights(torch.tensor([20]), 3, torch.full((M,), 70.0, dtype=torch.float64), torch.full((M,), 40.0, dtype=torch.float64))[0]
    assert g[0, 0] > 2.9
    return g


@pytest.mark.parametrize("activation,depth", [("relu", 2), ("tanh", 1), ("sigmoid", 2), ("gelu", 2)])
def test_hessian_vector_product_is_exact(activation, depth):
    data, sizes, stack = small_problem(activation, depth)
    gamma = peak_gamma(2)
    op = StackHessian(stack.weights, activation, augment(data.train.x), LossHead("dce", data.train.y, 3, torch.float64), gamma)
    v = torch.randn(2, op.layout.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hv = op(v)
    for m in range(2):  # one product of the summed loss serves both stacked runs
        H = exact_hessian([w[m] for w in stack.weights], sizes, activation, "dce", gamma[m], data.train.x, data.train.y)
        torch.testing.assert_close(hv[m], H @ v[m], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["ce", "dce", "mse", "dmse1", "dmse2"])
def test_top_k_eigenvalues_match_exact_hessian(name):
    data, sizes, stack = small_problem("relu", 1)
    gamma = peak_gamma(2) if name not in ("ce", "mse") else torch.ones(2, 3, dtype=torch.float64)
    op = StackHessian(stack.weights, "relu", augment(data.train.x), LossHead(name, data.train.y, 3, torch.float64), gamma)
    lanczos = Lanczos(k=3, iters=39, tol=1e-10)
    values = lanczos.top(op, 2, op.layout.numel, data.train.x)
    for m in range(2):
        H = exact_hessian([w[m] for w in stack.weights], sizes, "relu", name, gamma[m], data.train.x, data.train.y)
        exact = torch.linalg.eigvalsh(H).flip(0)[:3].numpy()
        np.testing.assert_allclose(values[m], exact, rtol=1e-6)
    # warm start: the same operator again converges in fewer products than the cold start did
    cold = lanczos.last_iters
    lanczos.top(op, 2, op.layout.numel, data.train.x)
    assert lanczos.last_iters < cold


def train(tmp_path, overrides):
    cfg = compose_config(BASE + overrides)
    job = job_from_config(cfg, tmp_path, None)
    data = data_from_config(cfg)
    (result,) = train_jobs([job], data, torch.device("cpu"), progress=False)
    return job.config, data, result, pd.read_csv(tmp_path / "history.csv")


@pytest.mark.parametrize(
    "loss,optim",
    [
        ("ce", ["optim.lr=0.5", "sharpness.tol=1e-10"]),
        ("dce", ["optim.lr=0.5"]),  # at the default tol; the last step, 60 = T + T/2, is a peak of Gamma (class 1 at ~2.92)
        ("mse", ["optim.lr=0.2", "sharpness.tol=1e-10"]),
        ("dmse2", ["optim.lr=0.2", "sharpness.tol=1e-10"]),
        ("dce", ["optim=sgd", "optim.batch_size=16", "optim.momentum=0.5", "sharpness.tol=1e-10"]),  # on the full training set
    ],
)
def test_runner_lambda_max_is_the_exact_hessian_eigenvalue(tmp_path, loss, optim):
    config, data, result, history = train(tmp_path, [f"loss={loss}", "train.steps=60", "train.eval_every=30", "sharpness.every=20", *optim])
    assert result["status"] == "finished"
    last = history.iloc[-1]
    assert last["step"] == 60  # measured at the final weights, which weights.pt holds
    gamma = torch.tensor([last[f"gamma/{c}"] for c in range(3)], dtype=torch.float64)
    if loss == "dce":
        assert gamma.max() > 2.9
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)
    sizes = layer_sizes(2, 6, 1, 3)
    H = exact_hessian(weights, sizes, "relu", loss, gamma, data.train.x.double(), data.train.y)
    exact = torch.linalg.eigvalsh(H).max().item()
    # the Hessian of the loss itself, not of lr times it (the trainer folds lr into its gradients)
    assert last["sharpness/lambda_max"] == pytest.approx(exact, rel=1e-4)
    o = config["optim"]
    assert last["sharpness/threshold"] == pytest.approx((2 + 2 * o["momentum"]) / o["lr"])
    # rows at every sharpness step, each step once; evaluation rows keep their metrics
    assert list(history["step"]) == [0, 20, 30, 40, 60]
    assert history.set_index("step").loc[[0, 20, 40, 60], "sharpness/lambda_max"].notna().all()
    assert history.set_index("step").loc[[0, 30, 60], "val/acc"].notna().all()
    # a sharpness-only row carries its step's loss only when that loss is the full training set's
    assert history.set_index("step").loc[[20, 40], "train/loss"].isna().all() == ("optim=sgd" in optim)
    lam = history["sharpness/lambda_max"].dropna()
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["final_lambda_max"] == pytest.approx(lam.iloc[-1])
    assert saved["max_lambda_max"] == pytest.approx(lam.max())
    assert saved["frac_above_threshold"] == pytest.approx((lam > saved["sharpness_threshold"]).mean())
    assert saved["sharpness_measurements"] == 4


def test_light_rows_carry_the_step_loss(tmp_path):
    """Rows at sharpness-only steps have that step's training loss, equal to a full evaluation's."""
    _, _, _, h_sharp = train(tmp_path / "a", ["loss=dce", "train.steps=40", "train.eval_every=10", "sharpness.every=5"])
    _, _, _, h_eval = train(tmp_path / "b", ["loss=dce", "train.steps=40", "train.eval_every=5"])
    a, b = h_sharp.set_index("step"), h_eval.set_index("step")
    assert list(a.index) == list(b.index) == list(range(0, 41, 5))
    np.testing.assert_allclose(a["train/dyn_loss"], b["train/dyn_loss"], rtol=1e-12)
    np.testing.assert_allclose(a["gamma/0"], b["gamma/0"], rtol=1e-12)
    assert "sharpness/lambda_max" not in b


def test_off_by_default_adds_nothing(tmp_path):
    _, _, result, history = train(tmp_path, ["train.steps=20", "train.eval_every=10"])
    assert not any(c.startswith("sharpness/") for c in history)
    assert "final_lambda_max" not in result


def test_stability_thresholds():
    assert stability_threshold("gd", 1.0, 0.0) == pytest.approx(2.0)
    assert stability_threshold("gd", 0.5, 0.0) == pytest.approx(4.0)
    assert stability_threshold("sgd", 0.1, 0.9) == pytest.approx(38.0)  # heavy ball: (2 + 2 beta) / lr
    assert stability_threshold("adam", 0.01, 0.0, beta1=0.9) == pytest.approx(3800.0)  # (2 + 2 b1) / ((1 - b1) lr)


def test_stacked_runs_get_their_own_threshold_and_values(tmp_path):
    """Two runs trained as one stack (different seeds and lr) get the values each would get alone."""
    data, sizes, _ = small_problem()
    jobs = []
    for i, (seed, lr) in enumerate([(0, 0.5), (3, 0.25)]):
        cfg = compose_config(BASE + ["loss=dce", "train.steps=30", "train.eval_every=30", "sharpness.every=10", "sharpness.tol=1e-10",
                                     f"seed={seed}", f"optim.lr={lr}"])  # fmt: skip
        jobs.append(job_from_config(cfg, tmp_path / f"j{i}", None))
    data = data_from_config(cfg)
    train_jobs(jobs, data, torch.device("cpu"), progress=False)
    for i, job in enumerate(jobs):
        alone = Job(job.config, tmp_path / f"alone{i}", job.name)
        train_jobs([alone], data, torch.device("cpu"), progress=False)
        a, b = pd.read_csv(job.job_dir / "history.csv"), pd.read_csv(alone.job_dir / "history.csv")
        np.testing.assert_allclose(a["sharpness/lambda_max"], b["sharpness/lambda_max"], rtol=1e-8)
        assert a["sharpness/threshold"].iloc[0] == pytest.approx(2 / job.config["optim"]["lr"])


def test_adam_preconditioned_sharpness(tmp_path):
    """lambda_max(P^-1 H), P = (1 - b1^t) diag(sqrt(v_hat) + eps): Adam's own stability quantity."""
    data, sizes, stack = small_problem(seeds=(0,))
    opt = StackedAdam(stack.weights, torch.tensor([0.01], dtype=torch.float64), eps=1e-8)
    g = torch.Generator().manual_seed(2)
    opt.v = [torch.rand(w.shape, generator=g, dtype=torch.float64) * 1e-3 for w in stack.weights]
    opt.t = 7
    cfg = compose_config(BASE + ["optim=adam", "optim.lr=0.01", "sharpness.every=1", "sharpness.tol=1e-10", "sharpness.iters=39"])
    job = job_from_config(cfg, tmp_path, None)
    monitor = SharpnessMonitor([job], stack, augment(data.train.x), data.train.y, 3, opt)
    gamma = torch.ones(1, 3, dtype=torch.float64)
    row = monitor.measure(7, gamma)
    H = exact_hessian([w[0] for w in stack.weights], sizes, "relu", "ce", gamma[0], data.train.x, data.train.y)
    v = FlatLayout([tuple(w.shape[1:]) for w in stack.weights]).flatten(opt.v)[0]
    p = (1 - 0.9**7) * ((v / (1 - 0.999**7)).sqrt() + 1e-8)
    exact = torch.linalg.eigvals(torch.diag(1 / p) @ H).real.max().item()
    assert row["sharpness/lambda_max"][0] == pytest.approx(exact, rel=1e-6)
    assert row["sharpness/threshold"][0] == pytest.approx(3800.0)
    # before Adam's first step there is no preconditioner: NaN, and the run goes on
    opt.t = 0
    assert np.isnan(monitor.measure(0, gamma)["sharpness/lambda_max"][0])


def test_adam_run_records_preconditioned_sharpness(tmp_path):
    _, _, result, history = train(tmp_path, ["optim=adam", "train.steps=20", "train.eval_every=10", "sharpness.every=5"])
    assert result["status"] == "finished" and result["sharpness_kind"] == "preconditioned"
    assert np.isnan(history["sharpness/lambda_max"].iloc[0]) and history["sharpness/lambda_max"].iloc[1:].notna().all()
    assert result["sharpness_measurements"] == 4


def test_divergence_is_preceded_by_sharpness_above_threshold(tmp_path):
    """GD at a large learning rate diverges; the measured lambda_max exceeded 2/lr on the way."""
    _, _, result, history = train(tmp_path, ["loss=mse", "optim.lr=3.0", "train.steps=200", "train.eval_every=50", "sharpness.every=1"])
    assert result["status"] == "diverged"
    assert result["max_lambda_max"] > 2 / 3.0
    assert history["step"].is_unique and history["step"].is_monotonic_increasing


def test_zero_padded_stack_of_two_widths_measures_each_run_as_alone(tmp_path):
    """A batched stack pads the narrower run with zeros; its eigenvalues must be those of the run's own weights.

    With tanh the padded Hessian is not the run's: act'(0) = 1 couples a padded unit's incoming and
    outgoing weights through the gradient, adding eigenvalues +-sigma(gradient) (large at a peak of
    Gamma), so this fails unless the padding is projected out.
    """
    data = make_data("spiral", 3, 20, 10, 0.2, 0).to("cpu", torch.float64)
    sizes = [layer_sizes(2, 4, 1, 3), layer_sizes(2, 8, 1, 3)]
    stack = MLPStack.create(sizes, "glorot_normal", [0, 1], "tanh", torch.float64, "cpu")
    overrides = ["loss=dce", "model.activation=tanh", "sharpness.every=1", "sharpness.k=3", "sharpness.tol=1e-10", "sharpness.iters=59"]
    jobs = [job_from_config(compose_config(BASE + overrides), tmp_path / str(m), None) for m in range(2)]
    opt = StackedOptimizer(stack.weights, torch.ones(2, dtype=torch.float64))
    gamma = peak_gamma(2)
    row = SharpnessMonitor(jobs, stack, augment(data.train.x), data.train.y, 3, opt).measure(0, gamma)
    for m in range(2):
        H = exact_hessian(stack.run_weights(m), sizes[m], "tanh", "dce", gamma[m], data.train.x, data.train.y)
        exact = torch.linalg.eigvalsh(H).flip(0)[:3].numpy()
        np.testing.assert_allclose([row[f"sharpness/lambda_{i}"][m] for i in (1, 2, 3)], exact, rtol=1e-6)
