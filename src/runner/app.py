"""One Hydra job: validate the config, build data and network, train, write the results."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from runner.data import data_from_config
from runner.trainer import Job, resolve_device, train_jobs
from runner.validate import plain, validate

log = logging.getLogger("runner")


def run_name(cfg: dict) -> str:
    """Says the coordinates a sweep varies: loss, A, T, width, depth, lr, seed."""
    loss = cfg["loss"]
    parts = [cfg["dataset"]["name"], loss["name"]]
    if loss["name"] not in ("ce", "mse"):
        parts.append(f"A{loss['A']:g}-T{loss['T']:g}")
    m = cfg["model"]
    parts.append(f"w{m['width']}" + (f"x{m['depth']}" if m["depth"] != 1 else ""))
    parts.append(f"{cfg['optim']['name']}{cfg['optim']['lr']:g}")
    parts.append(f"s{cfg['seed']}")
    return "-".join(parts)


def hydra_context() -> tuple[Path, str | None]:
    """The job directory, and the default W&B group: one per multirun (its sweep folder), "single"
    for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)  # multirun/DATE/TIME -> runner-DATE_TIME
        return job_dir, f"{hc.job.name}-{sweep.parent.name}_{sweep.name}"
    return job_dir, "single"


def plain_config(cfg: DictConfig | dict) -> dict:
    """The resolved config without Hydra's own node (a dict passes through: resolved once per job)."""
    return cfg if isinstance(cfg, dict) else plain(cfg)


def job_from_config(cfg: DictConfig | dict, job_dir: Path, default_group: str | None) -> Job:
    config = plain_config(cfg)
    validate(config)
    group = config["wandb"]["group"] or default_group
    # auto: a figure for a single run; a sweep's runs are compared on the dashboard, and one figure
    # costs ~0.35 s (more than training a 2 000-step run in a batched stack). runner.plot makes it later.
    figure = config["wandb"].get("figure", "auto")
    return Job(config, job_dir, run_name(config), group, figure=default_group == "single" if figure == "auto" else bool(figure))


def previous_result(cfg: DictConfig | dict, job_dir: Path) -> dict | None:
    """With resume on, the result a previous run of this job left (a rerun of a sweep into the same
    folder trains only what is missing); None when the job has to train."""
    config = plain_config(cfg)
    if not config.get("resume", False):
        return None
    from runner.resume import finished_result

    done = finished_result(job_dir, config)
    if done is not None:
        log.info("%s already finished, skipped (%s, val/acc %s)", job_dir, done["status"], done.get("final_val_acc"))
    return done


def summary_line(job: Job, result: dict) -> str:
    """The one line a job prints at the end: its final numbers and where its files are."""

    def num(key: str) -> float:
        return float("nan") if result.get(key) is None else result[key]  # 0.0 is a number, not missing

    return (
        f"{job.name} {result['status']}: val/acc {num('final_val_acc'):.4f} (best {num('best_val_acc'):.4f}), "
        f"train/acc {num('final_train_acc'):.4f}, train/loss {num('final_train_loss'):.4g}, "
        f"{result['steps'] or 0} steps in {result['runtime_s']:.1f} s on {result['device']} -> {job.job_dir}"
    )


def run(cfg: DictConfig) -> float | None:
    job_dir, group = hydra_context()
    config = plain_config(cfg)  # resolved once
    done = previous_result(config, job_dir)
    if done is not None:
        return done.get("final_val_acc")
    job = job_from_config(config, job_dir, group)
    threads = job.config["train"]["threads"]
    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_device(job.config["train"]["device"])
    data = data_from_config(config)  # the resolved dict: nothing resolved twice
    progress = bool(job.config["train"]["progress"]) and os.environ.get("RUNNER_NO_PROGRESS") is None
    (result,) = train_jobs([job], data, device, progress=progress)
    log.info(summary_line(job, result))
    return result["final_val_acc"]  # a sweeper (e.g. optuna) can maximise it
