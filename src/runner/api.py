"""A finished (or running) job from a notebook: runner.load_run(job_dir)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from runner.data import Data, data_from_config
from runner.model import to_module
from runner.trainer import DTYPES


@dataclass
class Run:
    dir: Path

    @cached_property
    def config(self) -> dict:
        return OmegaConf.to_container(OmegaConf.load(self.dir / "config.yaml"))

    @cached_property
    def result(self) -> dict | None:
        path = self.dir / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    @cached_property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.dir / "history.csv")

    @cached_property
    def steps(self) -> pd.DataFrame:
        """The training loss at every step (train.record_steps)."""
        return pd.read_csv(self.dir / "steps.csv")

    @cached_property
    def model(self) -> torch.nn.Module:
        weights = torch.load(self.dir / "weights.pt", weights_only=True)
        return to_module(weights, self.config["model"]["activation"]).eval()

    @cached_property
    def data(self) -> Data:
        data = data_from_config(self.config)
        return data.to("cpu", DTYPES[self.config["train"]["dtype"]])


def load_run(job_dir: str | Path) -> Run:
    job_dir = Path(job_dir)
    if not (job_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{job_dir} is not a runner job directory (no config.yaml)")
    return Run(job_dir)
