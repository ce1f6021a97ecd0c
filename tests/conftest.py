"""Shared helpers: compose configs the way the CLI does, and run the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "src" / "runner" / "conf"

# pytest -n 2 on 2 cores: one torch thread per process (this one and every CLI subprocess), or the
# workers oversubscribe the cores and tiny batched matmuls on strided views get ~30x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def compose_config(overrides: list[str] = ()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` in a subprocess, progress bar off, W&B offline unless args say otherwise."""
    full_env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}  # the caller's env decides
    full_env.update({"RUNNER_NO_PROGRESS": "1", "WANDB_SILENT": "true", **(env or {})})
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    def call(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = run_cli(list(args), tmp_path, env)
        if check:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    return call
