"""The batched launcher's work: prepare each job as the basic launcher would, then train by groups."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from runner.app import hydra_context, job_from_config, plain_config, previous_result, summary_line
from runner.batching import group_jobs, max_runs, split
from runner.data import data_from_config
from runner.files import write_json
from runner.trainer import Job, resolve_device, train_jobs

log = logging.getLogger(__name__)


@dataclass
class Skipped:
    """A job whose directory already holds its result (resumed sweep)."""

    value: float | None


def prepare(cfg: DictConfig) -> Job | Skipped:
    """The task function run_job calls for each job: validate, describe, train nothing."""
    job_dir, group = hydra_context()
    config = plain_config(cfg)  # resolved once, for both
    done = previous_result(config, job_dir)
    if done is not None:
        return Skipped(done.get("final_val_acc"))
    return job_from_config(config, job_dir, group)


Outcome = float | None | Exception  # a trained job's final validation accuracy, or why its stack failed


def pending_jobs(returns: list[JobReturn]) -> list[int]:
    """The prepared jobs that still have to train; a resumed job that had finished gets its value."""
    for r in returns:
        if r.status == JobStatus.COMPLETED and isinstance(r._return_value, Skipped):
            r.return_value = r._return_value.value
    return [i for i, r in enumerate(returns) if r.status == JobStatus.COMPLETED and isinstance(r._return_value, Job)]


def record_outcomes(returns: list[JobReturn], indices: list[int], outcomes: list[Outcome]) -> None:
    for i, outcome in zip(indices, outcomes):
        if isinstance(outcome, BaseException):
            returns[i].status = JobStatus.FAILED
        returns[i].return_value = outcome


def train_groups(jobs: list[Job], log_files: list[Path], max_batch: int | None, progress: bool) -> list[Outcome]:
    """Train jobs group by group, each group in stacks of at most max_batch (and what the device
    holds); a job's summary line is appended to its log file, as the basic launcher's would end."""
    outcomes: list[Outcome] = [None] * len(jobs)
    for group in group_jobs([j.config for j in jobs]):
        cfg = jobs[group[0]].config
        threads = cfg["train"]["threads"]
        if threads:
            torch.set_num_threads(int(threads))
        device = resolve_device(cfg["train"]["device"])
        data = data_from_config(cfg)
        widest = max(group, key=lambda g: jobs[g].config["model"]["width"])
        size = max_runs(jobs[widest].config, data.train.x.shape[0], data.features, data.classes, device, max_batch)
        for part in split(group, size):
            members = [jobs[g] for g in part]
            log.info("training %d runs as one stack on %s: %s ...", len(members), device, members[0].name)
            try:
                results = train_jobs(members, data, device, progress=progress and bool(cfg["train"]["progress"]))
            except Exception as e:  # noqa: BLE001 - one failing group must not stop the sweep
                if type(e).__module__.startswith("submitit"):
                    raise  # submitit's signal handler ending a SLURM task (time limit): a stop, not this stack's failure
                log.exception("a group of %d runs failed", len(members))
                for g, job in zip(part, members):
                    write_json(job.job_dir / "result.json", {"status": "failed", "error": repr(e), "name": job.name, "config": job.config})
                    outcomes[g] = e
                continue
            for g, result in zip(part, results):
                outcomes[g] = result["final_val_acc"]
                line = summary_line(jobs[g], result)
                log.info(line)
                with open(log_files[g], "a") as f:
                    f.write(line + "\n")
    return outcomes


def log_file(ret: JobReturn) -> Path:
    """The job's Hydra log file (JOB_DIR/JOB_NAME.log)."""
    return Path(ret._return_value.job_dir) / f"{ret.hydra_cfg.hydra.job.name}.log"


def train_prepared(returns: list[JobReturn], max_batch: int | None) -> None:
    """Train every prepared job in this process; each JobReturn gets its run's final validation accuracy."""
    pending = pending_jobs(returns)
    jobs = [returns[i]._return_value for i in pending]
    progress = os.environ.get("RUNNER_NO_PROGRESS") is None
    record_outcomes(returns, pending, train_groups(jobs, [log_file(returns[i]) for i in pending], max_batch, progress))
