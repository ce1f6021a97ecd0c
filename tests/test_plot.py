"""Figures from real job directories: the CLI commands, their sizes, the sweep finder, the W&B hook."""

import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from runner import plot
from runner.app import job_from_config
from runner.data import data_from_config
from runner.trainer import train_jobs

CONF = Path(__file__).resolve().parents[1] / "src" / "runner" / "conf"
TINY = ["wandb.mode=disabled", "model.width=8", "dataset.n_train=30", "dataset.n_val=20", "train.eval_every=50"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` in a subprocess, progress bar off."""
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_MODE"}, "RUNNER_NO_PROGRESS": "1", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def run_plot(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "runner.plot", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    """A real short run of the CLI: DCE over two windows, sharpness every 10 steps."""
    root = tmp_path_factory.mktemp("dyn")
    out = root / "job"
    args = TINY + ["loss=dce", "loss.T=100", "train.steps=200", "sharpness.every=10", f"hydra.run.dir={out}"]
    proc = run_cli(args, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_dynamics_command_writes_the_figure(job_dir, tmp_path):
    target = tmp_path / "fig" / "dyn.png"
    proc = run_plot("dynamics", str(job_dir), "--out", str(target))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(target)
    assert png_size(target) == (1000, 1300)  # DYNAMICS_SIZE at DPI
    assert target.stat().st_size > 20_000  # five panels of curves, not an empty canvas


def test_dynamics_default_output_and_a_run_without_sharpness(tmp_path):
    cfg = compose_config(TINY + ["train.progress=false", "train.steps=60"])
    job = job_from_config(cfg, tmp_path / "plain", None)
    train_jobs([job], data_from_config(cfg), torch.device("cpu"), progress=False)
    out = plot.dynamics(tmp_path / "plain")
    assert out == tmp_path / "plain" / "dynamics.png" and png_size(out) == (1000, 1300)


def make_sweep(root: Path) -> Path:
    """A small sweep in the multirun layout: numbered job folders, two widths x two seeds."""
    sweep = root / "sweep"
    proc = run_cli(["-m", *TINY, "train.steps=100", "sharpness.every=20", "model.width=4,8", "seed=0,1", f"hydra.sweep.dir={sweep}"], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_fig1_over_a_sweep(tmp_path):
    sweep = make_sweep(tmp_path)
    # decoys that are not jobs: Hydra's unresolved config and a W&B run's copy
    (sweep / "0" / "wandb" / "run" / "files").mkdir(parents=True)
    (sweep / "0" / "wandb" / "run" / "files" / "config.yaml").write_text("a: 1\n")
    jobs = plot.find_jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    assert plot.main(["fig1", str(sweep)]) == 0  # in-process: the CLI itself is tested with dynamics
    assert png_size(sweep / "fig1.png") == (1000, 800) and (sweep / "fig1.png").stat().st_size > 20_000


def test_mean_band_stays_inside_the_seeds():
    import pandas as pd

    a = pd.Series([1.0, 2.0, 4.0], index=[0, 10, 20])
    b = pd.Series([3.0, 2.0], index=[0, 10])  # a shorter run (diverged or still running)
    t, mean, lo, hi = plot._mean_band([a, b])
    assert list(t) == [0, 10, 20] and list(mean) == [2.0, 2.0, 4.0]
    assert (lo <= mean).all() and (hi >= mean).all() and lo[0] == 1.0 and hi[0] == 3.0


def test_fig1_on_a_folder_without_jobs_is_a_clear_error(tmp_path, capsys):
    assert plot.main(["fig1", str(tmp_path)]) == 1
    assert "no job directories" in capsys.readouterr().err


class FakeSummary(dict):
    def __init__(self, fail: bool):
        super().__init__()
        self.fail = fail

    def __setitem__(self, key, value):
        if self.fail:
            raise RuntimeError("W&B is down")
        super().__setitem__(key, value)


class FakeRun:
    def __init__(self, fail: bool = False):
        self.summary = FakeSummary(fail)


class FakeRecorder:
    def __init__(self, job_dir: Path, run):
        self.dir = job_dir
        self.tracker = type("T", (), {"run": run})()
        self.history = type("H", (), {"flush": lambda self: 0})()


def test_figure_goes_to_wandb_and_never_fails_the_run(job_dir, tmp_path, caplog):
    import shutil

    import wandb

    local = tmp_path / "job"
    shutil.copytree(job_dir, local)
    plot.log_dynamics_figure(FakeRecorder(local, None))  # W&B off: nothing is drawn
    assert not (local / "dynamics.png").exists()
    run = FakeRun()
    plot.log_dynamics_figure(FakeRecorder(local, run))
    assert (local / "dynamics.png").exists()
    assert isinstance(run.summary["figures/dynamics"], wandb.Image)
    with caplog.at_level(logging.WARNING):
        plot.log_dynamics_figure(FakeRecorder(local, FakeRun(fail=True)))  # must not raise
        plot.log_dynamics_figure(FakeRecorder(tmp_path / "missing", FakeRun()))
    assert caplog.text.count("dynamics figure not logged") == 2
