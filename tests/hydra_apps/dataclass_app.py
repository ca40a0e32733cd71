"""An app whose primary config is a dataclass: it declares the recorder field."""

from dataclasses import dataclass, field

import hydra
from cartpole import evaluate
from hydra.core.config_store import ConfigStore

from arena_recording.integrations.hydra_configs import RecorderConf, UniformConf, VariationConf


@dataclass
class EvalConf:
    seed: int = 0
    num_envs: int = 4
    steps: int = 60
    recorder: RecorderConf | None = None
    variations: dict[str, VariationConf] = field(
        default_factory=lambda: {"gravity": VariationConf(sampler=UniformConf(low=8.0, high=12.0))}
    )


ConfigStore.instance().store(name="eval", node=EvalConf)


@hydra.main(config_path=None, config_name="eval", version_base="1.3")
def main(cfg: EvalConf) -> int:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
