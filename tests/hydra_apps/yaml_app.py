"""An app with a YAML config dir."""

import hydra
from cartpole import evaluate
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> int:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
