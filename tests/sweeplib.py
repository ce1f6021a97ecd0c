"""Helpers for the sweep tests (test_sweeps, test_aggregate, test_slurm): run a multirun, read its jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

# A 4-job sweep small enough for seconds, with every output file (steps.csv too) but no W&B run.
# One torch thread: tiny runs are overhead-bound, and under pytest -n 2 two threads per job oversubscribe
# the cores (measured: a 3000-step run took 0.2 s with 1 thread, 6-7 s with 2 on a loaded machine).
THREADS = "train.threads=1"
TINY = ["loss=ce,dce", "seed=0,1", "model.width=8", "train.steps=60", "train.eval_every=20", "wandb.mode=disabled", THREADS]


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    out.update({"RUNNER_NO_PROGRESS": "1", "WANDB_SILENT": "true"})
    return out


def runner(args: list[str], cwd: Path, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` in a subprocess; with check, a failure shows the end of its stderr."""
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


def result(job: Path) -> dict:
    return json.loads((job / "result.json").read_text())  # raises on a truncated file


def files(job: Path) -> set[str]:
    """The files a job left, relative to its folder (W&B's own folder aside: disabled in these tests)."""
    return {p.relative_to(job).as_posix() for p in job.rglob("*") if p.is_file() and "wandb" not in p.parts}


def assert_same_sweep(a: Path, b: Path) -> None:
    """Two launchers ran the same sweep: same jobs, overrides, files, statuses and numbers."""
    ja, jb = jobs(a), jobs(b)
    assert [j.name for j in ja] == [j.name for j in jb]
    assert ja, f"no jobs in {a}"
    for x, y in zip(ja, jb):
        assert overrides(x) == overrides(y), x.name
        assert files(x) == files(y), x.name
        rx, ry = result(x), result(y)
        assert rx["status"] == ry["status"] == "finished", x.name
        # float64 full-batch GD from the same seed: the same numbers up to reduction order
        assert rx["final_val_acc"] == ry["final_val_acc"], x.name
        assert abs(rx["final_train_loss"] - ry["final_train_loss"]) <= 1e-9 * abs(rx["final_train_loss"]), x.name


ROW_BYTES = 40  # steps.csv bytes per step, about


def popen(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m runner ARGS` started in the background (to be signalled or killed mid-run)."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_step(proc: subprocess.Popen, steps_csv: Path, step: int, timeout: float = 120) -> None:
    """Until steps.csv holds about `step` rows (the run is then somewhere past it)."""
    end = time.monotonic() + timeout
    while not (steps_csv.exists() and steps_csv.stat().st_size > step * ROW_BYTES):
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.02)
