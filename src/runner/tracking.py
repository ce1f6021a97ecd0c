"""Weights & Biases logging for one run: offline by default, never fatal to the run.

The local files (history.csv, result.json) are the record; W&B mirrors them. Any W&B error is
reported once as a warning and logging stops, so a W&B fault never loses local results.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
# Top-level config keys a dashboard can group and filter by without digging into nested config.
DASHBOARD_KEYS = {
    "dataset": "dataset.name",
    "width": "model.width",
    "depth": "model.depth",
    "loss": "loss.name",
    "A": "loss.A",
    "T": "loss.T",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "seed": "seed",
}


def _select(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def dashboard_config(config: dict) -> dict:
    flat = {key: _select(config, path) for key, path in DASHBOARD_KEYS.items()}
    return {**config, **flat}


class Tracker:
    def __init__(self, config: dict, job_dir: Path, name: str, group: str | None):
        self.run = None
        wcfg = config["wandb"]
        mode = wcfg["mode"]
        if mode == "disabled":
            return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=wcfg["project"],
                entity=wcfg.get("entity"),
                group=group,
                name=name,
                tags=list(wcfg.get("tags") or []),
                config=dashboard_config(config),
                dir=str(job_dir),
                mode=mode,
                reinit="create_new",  # each job its own run, even when jobs share a process
            )
            self.run.define_metric("step")
            for prefix in ("train/*", "val/*", "gamma/*", "sharpness/*"):
                self.run.define_metric(prefix, step_metric="step")
        except Exception as e:  # noqa: BLE001 - W&B must never fail the run
            self._disable(e)

    def _disable(self, error: Exception) -> None:
        log.warning("W&B disabled for this run (%s: %s); local results are unaffected", type(error).__name__, error)
        self.run = None

    def log(self, row: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log(row)
        except Exception as e:  # noqa: BLE001
            self._disable(e)

    def finish(self, summary: dict, failed: bool) -> None:
        if self.run is None:
            return
        try:
            for k, v in summary.items():
                self.run.summary[k] = v
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as e:  # noqa: BLE001
            self._disable(e)
        self.run = None
