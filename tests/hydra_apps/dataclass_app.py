"""An app whose primary config is a dataclass: it declares the recorder field and types its
variations, so Hydra checks them while composing."""

from dataclasses import dataclass, field

import hydra
from cartpole import evaluate
from hydra.core.config_store import ConfigStore

from arena_recording.core.config import RecorderCfg, UniformCfg, VariationCfg


@dataclass
class EvalConf:
    seed: int = 0
    num_envs: int = 4
    steps: int = 60
    recorder: RecorderCfg | None = None
    variations: dict[str, VariationCfg] = field(
        default_factory=lambda: {"gravity": VariationCfg(sampler=UniformCfg(low=8.0, high=12.0))}
    )


ConfigStore.instance().store(name="eval", node=EvalConf)


@hydra.main(config_path=None, config_name="eval", version_base="1.3")
def main(cfg: EvalConf) -> int:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
