"""Training through the real trainer on tiny budgets: equivalences that must hold exactly."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config

from runner import trainer
from runner.app import job_from_config
from runner.data import data_from_config, make_data
from runner.model import init_weights, layer_sizes
from runner.trainer import train_jobs

BASE = ["wandb.mode=disabled", "train.progress=false", "train.steps=300", "train.eval_every=50", "model.width=16", "loss.T=40"]


def train(tmp_path, name: str, overrides: list[str]):
    cfg = compose_config(BASE + overrides)
    job = job_from_config(cfg, tmp_path / name, None)
    (result,) = train_jobs([job], data_from_config(cfg), torch.device("cpu"), progress=False)
    return result, pd.read_csv(tmp_path / name / "history.csv"), pd.read_csv(tmp_path / name / "steps.csv")


@pytest.mark.parametrize("static,dynamic", [("ce", "dce"), ("mse", "dmse1"), ("mse", "dmse2")])
def test_A_equal_one_dynamical_run_is_exactly_the_static_run(tmp_path, static, dynamic):
    lr = "optim.lr=0.2"  # MSE at lr 1 leaves GD's stable range on this problem
    _, h_static, s_static = train(tmp_path, "s", [f"loss={static}", lr])
    _, h_dyn, s_dyn = train(tmp_path, "d", [f"loss={dynamic}", "loss.A=1", lr])
    assert len(h_static) == 7
    # DMSE2 sums its loss per output instead of per sample: the same number up to rounding order.
    # Its gradients are bitwise those of MSE when A = 1, so the trajectories cannot drift apart.
    exact = dynamic != "dmse2"
    pd.testing.assert_frame_equal(h_static, h_dyn, check_exact=exact, rtol=1e-13)
    pd.testing.assert_frame_equal(s_static, s_dyn, check_exact=exact, rtol=1e-13)
    # and A > 1 really changes the run (the comparison above could not pass by accident)
    _, h_dyn70, _ = train(tmp_path, "d70", [f"loss={dynamic}", "loss.A=70", lr])
    assert not np.allclose(h_dyn70["train/loss"], h_static["train/loss"])


def test_same_seed_same_history_different_seed_different_start(tmp_path):
    r1, h1, s1 = train(tmp_path, "a", ["loss=dce", "seed=5"])
    r2, h2, s2 = train(tmp_path, "b", ["loss=dce", "seed=5"])
    pd.testing.assert_frame_equal(h1, h2, check_exact=True)
    pd.testing.assert_frame_equal(s1, s2, check_exact=True)
    sizes = layer_sizes(2, 16, 1, 3)
    w5, w6 = init_weights(sizes, "glorot_normal", 5), init_weights(sizes, "glorot_normal", 6)
    assert not torch.equal(w5[0], w6[0])
    _, h3, _ = train(tmp_path, "c", ["loss=dce", "seed=6"])
    assert h3["train/loss"].iloc[0] != h1["train/loss"].iloc[0]


def test_weights_precomputed_in_slices_give_the_same_run(tmp_path, monkeypatch):
    # Big stacks precompute the per-sample weights a few steps at a time (trainer.CHUNK_ELEMENTS);
    # one step at a time must give the very same numbers, with the same 1000-step host syncs.
    _, h_whole, s_whole = train(tmp_path, "whole", ["loss=dce", "loss.A=10"])
    monkeypatch.setattr(trainer, "CHUNK_ELEMENTS", 7)  # per_slice = 1: weights for one step at a time
    _, h_sliced, s_sliced = train(tmp_path, "sliced", ["loss=dce", "loss.A=10"])
    pd.testing.assert_frame_equal(h_whole, h_sliced, check_exact=True)
    pd.testing.assert_frame_equal(s_whole, s_sliced, check_exact=True)
    assert h_whole["gamma/0"].nunique() > 3  # the schedule really moved during the run


def test_history_columns_and_result(tmp_path):
    result, h, s = train(tmp_path, "r", ["loss=dce"])
    for col in [
        "step",
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "train/dyn_loss",
        "gamma/0",
        "gamma/2",
        "val/acc_class/0",
        "val/acc_class/2",
    ]:
        assert col in h.columns, col
    assert list(h["step"]) == [0, 50, 100, 150, 200, 250, 300]
    assert len(s) == 300 and s["step"].iloc[-1] == 299
    # history's train loss at an eval step is the loss that step minimised (both at the weights before its update)
    assert s.set_index("step").loc[100, "train/dyn_loss"] == pytest.approx(h.set_index("step").loc[100, "train/dyn_loss"], rel=1e-12)
    np.testing.assert_allclose(h[["gamma/0", "gamma/1", "gamma/2"]].sum(axis=1), 3.0, rtol=1e-12)
    assert result["status"] == "finished" and result["steps"] == 300
    assert result["final_val_acc"] == h["val/acc"].iloc[-1]
    assert result["best_val_acc"] == h["val/acc"].max()
    assert result["final_train_loss"] == h["train/loss"].iloc[-1]


def test_training_learns_the_spiral(tmp_path):
    # Adam, because plain GD with static CE crawls on the spiral (the papers' starting point)
    result, h, _ = train(
        tmp_path, "l", ["loss=ce", "optim=adam", "optim.lr=0.01", "train.steps=3000", "train.eval_every=1000", "model.width=64"]
    )
    assert h["train/loss"].iloc[-1] < 0.3 * h["train/loss"].iloc[0]
    assert result["final_train_acc"] > 0.85 and result["final_val_acc"] > 0.6  # chance is 1/3


@pytest.mark.parametrize("optim", ["optim=sgd", "optim=adam", "optim=gd optim.momentum=0.9"])
def test_other_optimisers_reduce_the_loss(tmp_path, optim):
    _, h, _ = train(tmp_path, "o", ["loss=ce", *optim.split(), "optim.lr=0.05"])
    assert h["train/loss"].iloc[-1] < h["train/loss"].iloc[0]


def test_float32_follows_float64_at_first(tmp_path):
    _, h64, _ = train(tmp_path, "f64", ["loss=dce"])
    _, h32, _ = train(tmp_path, "f32", ["loss=dce", "train.dtype=float32"])
    np.testing.assert_allclose(h32["train/loss"].iloc[:3], h64["train/loss"].iloc[:3], rtol=1e-4)


@pytest.mark.parametrize("name", ["spiral", "moons", "circles", "blobs", "xor", "digits"])
def test_datasets_are_standardised_and_validation_is_disjoint(name):
    classes = {"moons": 2, "xor": 2, "digits": 10}.get(name, 3)
    data = make_data(name, classes, 50, 30, 0.2, seed=1)
    assert data.train.x.shape[0] == 50 * classes and data.val.x.shape[0] == 30 * classes
    assert torch.bincount(data.train.y).tolist() == [50] * classes
    assert torch.allclose(data.train.x.mean(0), torch.zeros(data.features, dtype=torch.float64), atol=1e-10)
    train_rows = {tuple(r) for r in data.train.x.tolist()}
    assert not any(tuple(r) in train_rows for r in data.val.x.tolist())
    again = make_data(name, classes, 50, 30, 0.2, seed=1)
    assert torch.equal(again.train.x, data.train.x)
    if name != "digits":
        other = make_data(name, classes, 50, 30, 0.2, seed=2)
        assert not torch.equal(other.train.x, data.train.x)
