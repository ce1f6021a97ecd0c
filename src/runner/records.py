"""What one run leaves in its job directory, written as it trains.

config.yaml   the resolved config (written first)
history.csv   one row per evaluation (rewritten atomically, at most every few seconds, and at the end)
steps.csv     the training loss and the dynamical loss at every step (appended chunk by chunk)
weights.pt    the final weights (augmented [out, in + 1] matrices, see model.py)
result.json   the summary; written last, so its presence with status "finished" marks a finished run
wandb/        the W&B run (offline unless wandb.mode says otherwise)
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from runner.files import atomic_write, write_json, write_text
from runner.tracking import Tracker

HISTORY_REWRITE_S = 5.0


class RunRecorder:
    def __init__(self, config: dict, job_dir: Path, name: str, group: str | None):
        self.config = config
        self.dir = Path(job_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.rows: list[dict] = []
        self._last_write = 0.0
        self.record_steps = bool(config["train"]["record_steps"])
        write_text(self.dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        (self.dir / "result.json").unlink(missing_ok=True)  # a rerun in this folder is not finished yet
        if self.record_steps:
            with open(self.dir / "steps.csv", "w") as f:
                f.write("step,train/loss,train/dyn_loss\n")
        self.tracker = Tracker(config, self.dir, name, group)

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        self.tracker.log(row)
        if time.monotonic() - self._last_write > HISTORY_REWRITE_S:
            self._write_history()

    def add_steps(self, first_step: int, losses: np.ndarray) -> None:
        """losses: [K, 2] (static, dynamical) for steps first_step .. first_step + K - 1."""
        if not self.record_steps or len(losses) == 0:
            return
        steps = np.arange(first_step, first_step + len(losses))
        buf = io.StringIO()
        np.savetxt(buf, np.column_stack([steps, losses]), fmt=["%d", "%.17g", "%.17g"], delimiter=",")
        with open(self.dir / "steps.csv", "a") as f:
            f.write(buf.getvalue())  # one write per chunk: whole lines

    def _write_history(self) -> None:
        atomic_write(self.dir / "history.csv", lambda p: pd.DataFrame(self.rows).to_csv(p, index=False, float_format="%.17g"))
        self._last_write = time.monotonic()

    def finish(self, result: dict, weights: list[torch.Tensor] | None) -> None:
        self._write_history()
        if weights is not None:
            atomic_write(self.dir / "weights.pt", lambda p: torch.save([w.cpu() for w in weights], p))
        summary = {k: v for k, v in result.items() if k != "config" and isinstance(v, (int, float, str)) and v is not None}
        self.tracker.finish(summary, failed=result["status"] == "failed")
        write_json(self.dir / "result.json", result)
