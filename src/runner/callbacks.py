"""Hydra callback: compose and validate every job of a multirun before the first job starts.

Hydra's basic sweeper composes all jobs up front too, but it stops at the first composition error
with a multi-line message, and it cannot know our value checks. Here every job is composed the way
the launcher will compose it, and each distinct problem is printed once, as one line naming the key,
the value and what is allowed, with the first job that has it; then the multirun exits 2 before any
job directory exists. Configured under hydra.callbacks in conf/config.yaml.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.validate import config_problems, launcher_problems, message

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides as the basic sweeper will expand them; None for other sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None  # optuna & co. choose values as they go: each job validates itself
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    args = params + list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    overrides = OverridesParser.create().parse_overrides(args)
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


def composition_problem(error: Exception, job: list[str]) -> str:
    """One line for a job Hydra cannot compose (most often: a swept key that some option lacks)."""
    chain, e = [], error
    while e is not None:  # Hydra wraps omegaconf's "Key 'A' is not in struct" as the cause
        chain.append(str(e))
        e = e.__cause__
    text = "\n".join(chain)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "is not in struct" in text and lines and lines[0].startswith("Could not override"):
        key = lines[0].split("'")[1]
        value = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0].lstrip("+~") == key), "?")
        groups = " ".join(o for o in job if "." not in o.split("=", 1)[0])
        return (
            f"{key}={value}: no such key in the config composed from {groups or 'the defaults'}; "
            f"sweep it only with options that have it, or add it with +{key}=..."
        )
    return f"{' '.join(job)}: {'; '.join(lines[:3])}"


def multirun_problems(config: DictConfig) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    launcher = launcher_problems(config.hydra.launcher)  # whatever the sweeper
    jobs = sweep_jobs(config)
    if jobs is None:
        return launcher
    from runner.compose_cache import install

    loader = GlobalHydra.instance().hydra.config_loader
    # Compose once per combination of group choices, not once per job: this check, Hydra's own
    # batch validation and the launcher's per-job composition all share the cache (compose_cache.py).
    install(loader)
    composer = loader.load_sweep_config
    seen: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        try:
            composer(config, list(job))
            # what the job's task function gets (run_job's copy, no hydra node): ${hydra.job.num}
            # without the colon resolves in the composed config but not there
            found = config_problems(composer.task_config(config, list(job)))
        except Exception as e:  # noqa: BLE001 - Hydra raises several composition errors
            found = [composition_problem(e, job)]
        for p in found:
            seen.setdefault(p, []).append(i)
    return launcher + [
        f"{p} [job {idx[0]}: {' '.join(jobs[idx[0]]) or 'no overrides'}; {len(idx)} of {len(jobs)} jobs]" for p, idx in seen.items()
    ]


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        found = multirun_problems(config)
        if found:
            print(message(found), file=sys.stderr)
            print(f"multirun not started: {len(found)} problem(s) in the composed job configs", file=sys.stderr)
            sys.exit(2)
