"""Demo evaluation in Isaac Lab, kit-less on the CPU: a cube launched across a platform.

Success is coming to rest on the platform. The cube slides ``v**2 / (2 * mu * g)``, so the
launch speed and the friction decide success; the mass does not (it cancels out), and the
light intensity is drawn and recorded but applied to nothing, a control for the analysis.
Exactly ``eval.num_episodes`` episodes are evaluated: each env has a fixed quota.

    python -m arena_recording.demo.slide +recorder=default
    python -m arena_recording.demo.slide +recorder=default variations.friction.sampler.high=0.3
    python -m arena_recording.demo.slide -m +recorder=default variations.friction.sampler.low=0.1,0.3
"""

from __future__ import annotations

from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from arena_recording.progress import Tally

ISAACLAB = "arena_recording.integrations.isaaclab_appliers"
CONFIG: dict[str, Any] = {
    "seed": 0,
    "num_envs": 16,
    "eval": {"num_episodes": 64},
    "env": {"episode_length_s": 5.0, "num_substeps": 1, "device": "cpu"},
    "variations": {
        "speed": {
            "sampler": {"type": "uniform", "low": 0.5, "high": 4.5},
            "apply": {"func": f"{ISAACLAB}:root_velocity", "asset": "cube"},
        },
        "friction": {
            "sampler": {"type": "uniform", "low": 0.1, "high": 0.6},
            "apply": {"func": f"{ISAACLAB}:friction", "asset": "cube"},
        },
        "mass": {
            "sampler": {"type": "uniform", "low": 0.2, "high": 5.0},
            "apply": {"func": f"{ISAACLAB}:mass", "asset": "cube"},
        },
        "light": {"sampler": {"type": "uniform", "low": 500.0, "high": 3000.0}, "apply": None},
    },
}
ConfigStore.instance().store(name="slide_eval", node=CONFIG)


def evaluate(cfg: DictConfig) -> Tally:
    """Run exactly ``eval.num_episodes`` episodes."""
    from arena_recording.demo.slide_env import launch, make_env_cfg

    with launch(device=cfg.env.device):
        from isaaclab.envs import ManagerBasedRLEnv

        from arena_recording.integrations.isaaclab_recording import env_episodes, instrument
        from arena_recording.integrations.isaaclab_variations import variation_event

        env_cfg = make_env_cfg(
            cfg.num_envs,
            seed=cfg.seed,
            episode_length_s=cfg.env.episode_length_s,
            num_substeps=cfg.env.num_substeps,
            device=cfg.env.device,
        )
        variations = OmegaConf.to_container(cfg.variations, resolve=True)
        for key, spec in variations.items():
            setattr(env_cfg.events, f"variation_{key}", variation_event(key, **spec))
        env = ManagerBasedRLEnv(instrument(env_cfg))
        identity = env_episodes(env).identity
        identity.set_quota(cfg.eval.num_episodes)
        env.reset()
        actions = torch.zeros(cfg.num_envs, 0, device=env.device)
        success = env.termination_manager.get_term
        tally = Tally(cfg.eval.num_episodes)
        while not identity.quota_met():
            counted = identity.in_quota()
            env.step(actions)
            ended = env.termination_manager.dones & counted
            if ended.any():
                tally.add(int(ended.sum()), int((success("success") & ended).sum()))
        env.close()
    return tally


@hydra.main(version_base=None, config_name="slide_eval")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg).summary()


if __name__ == "__main__":
    main()
