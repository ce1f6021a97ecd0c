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
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.files import to_yaml

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
        setup_globals()
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns = self.prepare(job_overrides, initial_job_idx)
        self.train(returns)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for ret in returns:
            if ret.status == JobStatus.FAILED:
                log.error(f"job {ret.hydra_cfg.hydra.job.num if ret.hydra_cfg else '?'} failed: {ret._return_value!r}")
        return returns

    def prepare(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        """Every job's directory and .hydra/ as the basic launcher makes them; the "task" only
        validates and describes the job (a runner.trainer.Job), training comes after, by groups."""
        from runner.batched import prepare as prepare_job

        assert self.config is not None and self.hydra_context is not None
        log.info(f"Preparing {len(job_overrides)} jobs for batched training")
        returns: list[JobReturn] = []
        loader = self.hydra_context.config_loader
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = loader.load_sweep_config(self.config, list(overrides))
            loader.load_sweep_config.jobs.pop(tuple(overrides), None)  # composed for the last time
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            task_config = loader.load_sweep_config.task_config(self.config, list(overrides))
            returns.append(setup_job(self.hydra_context, prepare_job, sweep_config, task_config))
        return returns

    def train(self, returns: list[JobReturn]) -> None:
        """Here, in this process: CUDA when present, else the CPU."""
        from runner.batched import train_prepared
        from runner.checkpoint import Preempted

        try:
            train_prepared(returns, self.max_batch)
        except Preempted as e:  # SIGTERM/SIGUSR2: checkpoints are saved; the rerun resumes them
            log.warning("%s", e)
            sys.exit(e.exit_code)


def setup_job(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig, task_config: DictConfig | None = None
) -> JobReturn:
    """hydra.core.utils.run_job for a multirun job, less its four deep copies of the config.

    run_job copies the whole config twice and its hydra node twice per job (~40 ms here: for a
    4 096-job sweep, minutes before the first step). The files are the same: .hydra/config.yaml,
    hydra.yaml and overrides.yaml are the YAML of one unresolved conversion of the config, split
    as run_job splits it, in OmegaConf's text (tests/test_batched.py compares them with the basic
    launcher's).
    """
    hydra_config = HydraConfig.instance()
    previous, old_cwd, chdir = hydra_config.cfg, os.getcwd(), False
    # First, as run_job does: sweep.dir and sweep.subdir may use ${hydra:job.override_dirname} etc.
    hydra_config.cfg = config  # HydraConfig.get() is cfg.hydra: ${hydra:...} resolves as in run_job
    OmegaConf.set_readonly(config.hydra, True)
    try:
        sweep = str(OmegaConf.select(config, "hydra.sweep.dir"))
        output_dir = os.path.abspath(os.path.join(sweep, str(OmegaConf.select(config, "hydra.sweep.subdir"))))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = output_dir
        container = OmegaConf.to_container(config, resolve=False, enum_to_str=True)
        hydra_node = container.pop("hydra")
        ret = JobReturn()
        # The config without its hydra node, as run_job passes it to the task (task_config: the
        # composer's cheap copy of it; else rebuilt from plain values and interpolation strings).
        ret.cfg = task_config if task_config is not None else OmegaConf.create(container)
        ret.hydra_cfg = config  # .hydra.job.num etc. read as from run_job's copy
        ret.overrides = list(hydra_node["overrides"]["task"])
        chdir = bool(config.hydra.job.chdir)
        ret.working_dir = output_dir if chdir else old_cwd
        if config.hydra.output_subdir is not None:
            out = os.path.join(output_dir, str(config.hydra.output_subdir))
            os.makedirs(out, exist_ok=True)
            for name, node in (("config.yaml", container), ("hydra.yaml", {"hydra": hydra_node}), ("overrides.yaml", ret.overrides)):
                with open(os.path.join(out, name), "w", encoding="utf-8") as f:
                    f.write(to_yaml(node))
        else:
            os.makedirs(output_dir, exist_ok=True)
        if chdir:
            os.chdir(output_dir)  # for the callbacks and the preparation; training runs later, from old_cwd
        callbacks = hydra_context.callbacks
        with env_override(config.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(ret.cfg)  # the config without its hydra node, as run_job passes it
                ret.status = JobStatus.COMPLETED
            except Exception as e:  # noqa: BLE001 - as run_job: the failure is the job's return value
                ret.return_value = e
                ret.status = JobStatus.FAILED
        ret.task_name = config.hydra.job.name
        callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        hydra_config.cfg = previous
        if chdir:
            os.chdir(old_cwd)
