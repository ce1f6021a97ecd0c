"""Weights & Biases logging for one run: offline by default, never fatal to the run.

The local files (history.csv, result.json) are the record; W&B mirrors them. Any W&B error is
reported once as a warning and logging stops, so a W&B fault never loses local results.

Online mode without credentials (WANDB_API_KEY or a netrc entry for the server) or without a
reachable server (a TCP connect within ONLINE_PROBE_S) falls back to offline at once, with one
warning: `wandb sync` uploads the run later. If wandb.init itself fails or times out (INIT_TIMEOUT_S),
the run is retried offline. finish() waits at most FINISH_TIMEOUT_S for uploads.
A diverged run is a result: it finishes with exit code 0, summary status "diverged" and tag "diverged".
A resumed run (checkpoint.py) continues the same W&B run: its id is stored in the checkpoint and
passed back with resume="allow"; rows logged between the last checkpoint and the kill appear twice.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
ONLINE_PROBE_S = 3.0
INIT_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 60.0
DEFAULT_BASE_URL = "https://api.wandb.ai"
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


def _why_not_online() -> str | None:
    """Why online logging cannot work here, checked in seconds; None when it may."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    host = url.hostname or ""
    if not os.environ.get("WANDB_API_KEY"):
        try:
            found = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            found = None
        if not found:
            return f"no W&B credentials for {host} (WANDB_API_KEY or `wandb login`)"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=ONLINE_PROBE_S).close()
    except OSError as e:
        return f"W&B server {host}:{port} unreachable ({e})"
    return None


def _list_packages_once(wandb) -> None:
    """Every wandb.init lists the installed packages for the run's requirements.txt by parsing each
    one's metadata: ~70 ms of CPU a run here, most of wandb.init and, in a sweep of thousands of
    runs in one process (the batched launcher), minutes. The answer is the same for every run of a
    process, so each run still gets the full list, read once. Left alone if wandb changes this."""
    util = getattr(wandb, "util", None)
    original = getattr(util, "working_set", None)
    if original is None or getattr(original, "runner_cached", False):
        return
    packages: list = []

    def working_set():
        if not packages:
            packages.extend(original())
        return iter(packages)

    working_set.runner_cached = True
    util.working_set = working_set


class Tracker:
    def __init__(self, config: dict, job_dir: Path, name: str, group: str | None, run_id: str | None = None):
        self.run = None
        wcfg = config["wandb"]
        mode = wcfg["mode"]
        if mode == "disabled":
            return
        try:
            import wandb

            _list_packages_once(wandb)
            os.environ.setdefault("WANDB_SILENT", "true")
            if mode == "online":
                why = _why_not_online()
                if why:
                    log.warning("W&B online logging not possible: %s; logging offline (upload later with `wandb sync`)", why)
                    mode = "offline"
            kwargs = dict(
                project=wcfg["project"],
                entity=wcfg.get("entity"),
                group=group,
                name=name,
                tags=list(wcfg.get("tags") or []),
                config=dashboard_config(config),
                dir=str(job_dir),
                reinit="create_new",  # each job its own run, even when jobs share a process
                id=run_id,
                resume="allow" if run_id else None,
            )
            settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, finish_timeout=FINISH_TIMEOUT_S)
            try:
                self.run = wandb.init(mode=mode, settings=settings, **kwargs)
            except Exception as e:  # noqa: BLE001
                if mode != "online":
                    raise
                log.warning("W&B online init failed (%s: %s); logging offline (upload later with `wandb sync`)", type(e).__name__, e)
                self.run = wandb.init(mode="offline", settings=settings, **kwargs)
            self.run.define_metric("step")
            for prefix in ("train/*", "val/*", "gamma/*", "sharpness/*"):
                self.run.define_metric(prefix, step_metric="step")
        except Exception as e:  # noqa: BLE001 - W&B must never fail the run
            self._disable(e)

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

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

    def finish(self, summary: dict, status: str) -> None:
        if self.run is None:
            return
        try:
            for k, v in summary.items():
                self.run.summary[k] = v
            if status != "finished":  # "diverged": findable in the dashboard by tag and summary
                self.run.tags = tuple(self.run.tags or ()) + (status,)
            self.run.finish(exit_code=1 if status == "failed" else 0)
        except Exception as e:  # noqa: BLE001
            self._disable(e)
        self.run = None
