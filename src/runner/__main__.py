"""python -m runner [overrides] | python -m runner -m [sweep overrides]

Exit status: 0 done (a diverged run is a result, not a failure); 2 invalid config (nothing trained,
nothing written but Hydra's own .hydra/ and log); 128 + signal number when SIGTERM/SIGUSR2 stopped the
run after it saved a checkpoint (rerun the same command to resume); 1 any other failure (in a
multirun: some job failed, the others ran).
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("runner")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _job(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from runner.validate import ConfigError, config_problems, message

    # Validated before `import torch`, so a bad config costs a fraction of a second.
    found = config_problems(cfg)
    if found:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # Only reachable when runner.callbacks could not pre-validate the sweep (a sweeper other
            # than the basic one). sys.exit here would end the whole basic-launcher process and skip
            # the remaining jobs; an exception marks this job failed and Hydra goes on with the rest.
            raise ConfigError(message(found))
        print(message(found), file=sys.stderr)
        sys.exit(2)

    from runner.app import run  # imported here: torch and the trainer only for a valid config
    from runner.checkpoint import Preempted

    try:
        return run(cfg)
    except ConfigError as e:  # a check that needs the built job (none today); same contract
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(e, file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        # The whole process is being stopped (SLURM, kill): end every job of a basic-launcher sweep too.
        log.warning("%s", e)
        sys.exit(e.exit_code)


def main() -> None:
    """The console entry point: unknown config-group options first (one line each), then Hydra."""
    from runner.validate import group_problems, message

    found = group_problems(sys.argv[1:])
    if found:
        print(message(found), file=sys.stderr)
        sys.exit(2)
    _job()


if __name__ == "__main__":
    main()
