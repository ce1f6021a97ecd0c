"""hydra/launcher=batched: train the jobs of a multirun as stacked models, in this process.

    python -m runner -m hydra/launcher=batched loss=dce seed='range(20)' model.width=8,32,100

Each job still gets what the basic launcher gives it (job directory, .hydra/, config.yaml,
history.csv, result.json, weights, W&B run); only the training is shared. Jobs are grouped by
runner.batching (same data, depth, loss, optimiser, step count ...) and each group trains as one
stack of at most `max_batch` runs (null: as many as fit in a quarter of free memory).
No `from __future__ import annotations` here: Hydra's plugin scan imports this module in a way that
breaks string annotations on the config dataclass.
"""

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.runner_launcher.batched_launcher.BatchedLauncher"
    max_batch: Any = None  # runs per stack; null = bounded by free memory only


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="runner")


class BatchedLauncher(Launcher):
    def __init__(self, max_batch: int | None = None) -> None:
        self.max_batch = max_batch
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from runner.compose_cache import install

        self.config = config
        self.hydra_context = hydra_context
        # Compose once per combination of group choices, not once per job (and Hydra's own batch
        # validation, which composes every job again, profits as well): see runner.compose_cache.
        install(hydra_context.config_loader)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from runner.batched import prepare as prepare_job
        from runner.batched import train_prepared

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Preparing {len(job_overrides)} jobs for batched training")
        returns: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            loader = self.hydra_context.config_loader
            sweep_config = loader.load_sweep_config(self.config, list(overrides))
            loader.load_sweep_config.jobs.pop(tuple(overrides), None)  # composed for the last time
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            # run_job makes the job directory and .hydra/ exactly as the basic launcher does; the
            # "task" only validates and describes the job, training happens below, group by group.
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=prepare_job,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                    configure_logging=False,
                )
            )
        from runner.checkpoint import Preempted

        try:
            train_prepared(returns, self.max_batch)
        except Preempted as e:  # SIGTERM/SIGUSR2: checkpoints are saved; the rerun resumes them
            log.warning("%s", e)
            sys.exit(e.exit_code)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for ret in returns:
            if ret.status == JobStatus.FAILED:
                log.error(f"job {ret.hydra_cfg.hydra.job.num if ret.hydra_cfg else '?'} failed: {ret.return_value!r}")
        return returns
