"""hydra/launcher=batched_slurm: the batched launcher's groups, one SLURM array task each.

    python -m runner -m hydra/launcher=batched_slurm hydra.launcher.partition=gpu \
      hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=120 \
      loss=ce,dce model.width=8,32,100 seed='range(20)'

This process composes and prepares every job as the batched launcher does (job directories, .hydra/,
validation, resume check: a bad config fails here, before anything is submitted), groups the jobs
that can share a stack (runner.batching) and submits one SLURM array with one task per group, or per
`runs_per_task` runs of a group. Each task trains its jobs as stacked models on its node (CUDA when
present) and writes their files; the command blocks until the array ends, like hydra/launcher=slurm.
Every other key is hydra-submitit-launcher's submitit_slurm key of the same name (partition, qos,
account, mem_gb, additional_parameters, setup, ...). No `from __future__ import annotations` here:
Hydra's plugin scan breaks string annotations on the config dataclass.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from omegaconf import OmegaConf

from hydra_plugins.runner_launcher.batched_launcher import BatchedLauncher

log = logging.getLogger(__name__)


@dataclass
class BatchedSlurmLauncherConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.runner_launcher.batched_slurm_launcher.BatchedSlurmLauncher"
    max_batch: Any = None  # runs per stack on the node; null = what its memory (and CPU cache) holds
    runs_per_task: Any = None  # runs per array task; null = a whole group per task
    # the defaults of conf/hydra/launcher/slurm.yaml, for a task that trains a whole group
    timeout_min: int = 60
    cpus_per_task: Any = 2
    mem_gb: Any = 4
    array_parallelism: int = 64


ConfigStore.instance().store(group="hydra/launcher", name="batched_slurm", node=BatchedSlurmLauncherConf, provider="runner")


def task_parts(configs: list[dict], runs_per_task: int | None) -> list[list[int]]:
    """The jobs of each array task: a group of runner.batching each, split evenly when it has more
    than runs_per_task runs."""
    from runner.batching import group_jobs, split

    return [part for group in group_jobs(configs) for part in split(group, runs_per_task or len(group))]


NOT_DONE = object()


def finished_outcomes(jobs: list) -> list:
    """Each job's final validation accuracy if its folder holds its finished result, else NOT_DONE."""
    from runner.app import previous_result  # the check every launcher makes (resume: true)

    out = []
    for job in jobs:
        done = previous_result(job.config, job.job_dir)
        out.append(NOT_DONE if done is None else done.get("final_val_acc"))
    return out


class GroupTask:
    """One array task: train its jobs on the node. Requeued by submitit after a preemption or time
    limit (with max_num_timeout > 0), it skips the jobs that finished and resumes from checkpoints."""

    def __init__(self, max_batch: int | None, env_set: dict | None = None) -> None:
        self.max_batch = max_batch
        self.env_set = dict(env_set or {})  # hydra.job.env_set: run_job sets it around each job, here on the node

    def __call__(self, jobs: list, log_files: list[Path]) -> list:
        import torch

        from runner.batched import train_groups
        from runner.checkpoint import Preempted

        if not logging.getLogger().handlers:  # SLURM's stdout: the task's log in .submitit/
            logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        os.environ.update({k: str(v) for k, v in self.env_set.items()})
        if os.environ.get("SLURM_CPUS_PER_TASK"):
            # torch would start a thread per core of the node; train.threads, if set, still wins
            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        outcomes: list = finished_outcomes(jobs)
        todo = [i for i, o in enumerate(outcomes) if o is NOT_DONE]
        try:
            trained = train_groups([jobs[i] for i in todo], [log_files[i] for i in todo], self.max_batch, progress=False)
        except Preempted as e:
            # Not requeued (submitit requeues and exits before this): checkpoints are saved, the jobs
            # are unfinished, not failed. An Exception, so that submitit reports it to the launcher.
            raise RuntimeError(str(e)) from e
        for i, outcome in zip(todo, trained):
            # an exception goes back pickled: keep only its text, its type may not unpickle here
            outcomes[i] = RuntimeError(repr(outcome)) if isinstance(outcome, BaseException) else outcome
        return outcomes

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class BatchedSlurmLauncher(BatchedLauncher):
    def __init__(self, max_batch: int | None = None, runs_per_task: int | None = None, **params: Any) -> None:
        super().__init__(max_batch)
        self.runs_per_task = runs_per_task
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()}

    def executor(self) -> Any:
        """A submitit SLURM executor with the launcher's keys, named as hydra-submitit-launcher names them."""
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def train(self, returns: list[JobReturn]) -> None:
        from runner.batched import log_file, pending_jobs, record_outcomes

        pending = pending_jobs(returns)
        if not pending:
            return
        jobs = [returns[i]._return_value for i in pending]
        parts = task_parts([j.config for j in jobs], self.runs_per_task)
        futures = self.executor().map_array(
            GroupTask(self.max_batch, OmegaConf.to_container(self.config.hydra.job.env_set, resolve=True)),
            [[jobs[g] for g in part] for part in parts],
            [[log_file(returns[pending[g]]) for g in part] for part in parts],
        )
        log.info(f"{len(jobs)} jobs in {len(parts)} tasks of SLURM array {futures[0].job_id.split('_')[0]}; waiting for them")
        for part, future in zip(parts, futures):
            try:
                outcomes = future.results()[0]
            except Exception as e:  # noqa: BLE001 - a task that died (time limit, node failure) fails its jobs only
                # ... those it had not finished: a stack that wrote its results before is done
                outcomes = [e if o is NOT_DONE else o for o in finished_outcomes([jobs[g] for g in part])]
                left = sum(o is e for o in outcomes)
                log.error(f"SLURM task {future.job_id} ended early, {left} of its {len(part)} jobs unfinished (rerun the command): {e}")
            record_outcomes(returns, [pending[g] for g in part], outcomes)
