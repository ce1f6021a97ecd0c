"""python -m runner [overrides] | python -m runner -m [sweep overrides]"""

import sys

import hydra
from omegaconf import DictConfig

from runner.validate import ConfigError


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from runner.app import run  # imported here so `--help` and tab completion stay fast

    try:
        return run(cfg)
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
