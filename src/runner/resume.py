"""Resumable sweeps: a job whose directory already holds a result is not trained again.

Rerunning a multirun command into the same sweep directory (hydra.sweep.dir=...) then runs only the
jobs that have no result yet: a killed sweep loses only the jobs that were in flight. result.json is
written last and atomically (records.py, files.py), so its presence means the job ended; a job that
was killed mid-run has none and trains again from scratch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# A diverged run is a result too (its divergence is the finding); a failed one is worth retrying.
DONE = ("finished", "diverged")
# Keys that do not change what a job computes: a rerun that differs only here still counts as done.
IGNORED = ("wandb", "resume", "train.progress", "train.threads", "train.device")


def _strip(config: dict) -> dict:
    config = json.loads(json.dumps(config, default=str))  # a deep copy with JSON's types, as stored
    for dotted in IGNORED:
        *parents, last = dotted.split(".")
        node = config
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return config


def finished_result(job_dir: Path, config: dict | None = None) -> dict | None:
    """The stored result of job_dir if it is done (finished or diverged), else None.

    With `config` (the job's resolved config), a result that was computed from a different config
    is not reused: rerunning a *different* sweep into an old folder must not return stale numbers.
    """
    path = Path(job_dir) / "result.json"
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # unreadable: train again rather than trust it
        log.warning("%s is unreadable (%s): training again", path, e)
        return None
    if result.get("status") not in DONE:
        return None
    if config is not None and "config" in result and _strip(result["config"]) != _strip(config):
        log.warning("%s holds a result of a different config: training again", path)
        return None
    return result
