"""An app without a config dir (config_path=None): everything comes from overrides."""

import hydra
from cartpole import evaluate
from omegaconf import DictConfig


@hydra.main(config_path=None, version_base="1.3")
def main(cfg: DictConfig) -> int:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
