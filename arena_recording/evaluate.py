"""Evaluate a policy on a registered Isaac Lab task: exactly N episodes, recording on with one override.

A Hydra app. Each env gets a fixed quota of episodes (they differ by at most one), so the
evaluation does not over-weight short episodes; every started episode inside a quota is
finished. At the end it prints the success rate, the factor ranking and the report's path.

    python -m arena_recording.evaluate +recorder=default                  # the sliding-cube task
    python -m arena_recording.evaluate +recorder=default num_episodes=2000 seed=3
    python -m arena_recording.evaluate +recorder=default task=Isaac-Cartpole \\
        variations=none policy=logs/rsl_rl/cartpole/exported/policy.pt success_terms=[time_out]
    python -m arena_recording.evaluate -m +recorder=default variations.friction.sampler.high=0.3,0.6

``policy`` is ``zero``, ``random`` or a TorchScript / ONNX file as Isaac Lab's ``play`` scripts
export it (``arena_recording.integrations.isaaclab_policies``). ``variations`` is a config group:
``slide`` (the default task's factors) or ``none``; add your own under ``variations.<key>``.
On ``device=cpu`` the task runs kit-less with Newton / MuJoCo-Warp (no Isaac Sim needed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from arena_recording.core.config import RecorderCfg
from arena_recording.core.episodes import EpisodeIdentity
from arena_recording.core.session import active_session
from arena_recording.progress import Tally

log = logging.getLogger(__name__)

APPLIERS = "arena_recording.integrations.isaaclab_appliers"
SLIDE_VARIATIONS: dict[str, Any] = {
    "speed": {
        "sampler": {"type": "uniform", "low": 0.5, "high": 4.5},
        "apply": {"func": f"{APPLIERS}:root_velocity", "asset": "cube"},
    },
    "friction": {
        "sampler": {"type": "uniform", "low": 0.1, "high": 0.6},
        "apply": {"func": f"{APPLIERS}:friction", "asset": "cube"},
    },
    "mass": {
        "sampler": {"type": "uniform", "low": 0.2, "high": 5.0},
        "apply": {"func": f"{APPLIERS}:mass", "asset": "cube"},
    },
    # applied to nothing: a factor with no effect, a control for the ranking
    "light": {"sampler": {"type": "uniform", "low": 500.0, "high": 3000.0}, "apply": None},
}


@dataclass
class EvaluateCfg:
    """The evaluation: which task, how many envs and episodes, which policy, which seed."""

    defaults: list[Any] = field(default_factory=lambda: [{"variations": "slide"}, "_self_"])
    task: str = "Arena-Slide-v0"
    num_envs: int = 64
    num_episodes: int = 512
    policy: str = "zero"
    seed: int = 0
    device: str = "cpu"
    variations: Any = MISSING
    success_terms: list[str] | None = None
    """Termination terms that count as success; default: the task's ``success`` term if it has
    one. Isaac Lab's locomotion and classic tasks count survival: ``success_terms=[time_out]``."""
    rank: bool = True
    """Print the factor ranking at the end (needs the analysis extra and a recording)."""
    recorder: RecorderCfg | None = None
    """Filled by ``+recorder=default``: what to record (``arena_recording.core.config``)."""


def register() -> None:
    """Store the app's configs (idempotent: Hydra may import this module more than once)."""
    store = ConfigStore.instance()
    store.store(name="evaluate", node=EvaluateCfg)
    store.store(group="variations", name="slide", node=SLIDE_VARIATIONS)
    store.store(group="variations", name="none", node={})


def _kit_less(env_cfg: Any, device: str) -> None:
    """On the CPU, run the task with Newton / MuJoCo-Warp and no CUDA graph (no Isaac Sim)."""
    if device != "cpu":
        return
    from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg

    physics = env_cfg.sim.physics
    if not isinstance(physics, NewtonCfg):
        env_cfg.sim.physics = physics = NewtonCfg(solver_cfg=MJWarpSolverCfg())
    physics.use_cuda_graph = False


def _fired(env: Any, name: str, terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """Whether termination term ``name`` fired in the last step (DirectRLEnv tasks have only
    ``terminated`` and ``time_out``)."""
    manager = getattr(env, "termination_manager", None)
    if manager is not None:
        return manager.get_term(name)
    return truncated if name == "time_out" else terminated


def _quota(identity: EpisodeIdentity, num_episodes: int) -> torch.Tensor:
    """Episodes per env; the recorder writes exactly these (``EpisodeIdentity.set_quota``).
    A replay (``+recorder=replay``) set its own when the env was built: one per selected row."""
    session = active_session()
    if session is None or session.replay is None:
        identity.set_quota(num_episodes)
    return identity.quota


def evaluate(cfg: DictConfig) -> Tally:
    """Run exactly ``cfg.num_episodes`` episodes of ``cfg.task`` under ``cfg.policy``."""
    from arena_recording.demo.slide_env import launch
    from arena_recording.integrations.isaaclab_policies import check_policy

    check_policy(cfg.policy)  # before the simulation starts
    with launch(device=cfg.device):
        import gymnasium as gym
        import isaaclab_tasks  # noqa: F401  (registers Isaac Lab's tasks)
        from isaaclab_tasks.utils.parse_cfg import load_cfg_from_registry

        import arena_recording.demo  # noqa: F401  (registers Arena-Slide-v0)
        from arena_recording.integrations.isaaclab_policies import load_policy
        from arena_recording.integrations.isaaclab_recording import (
            env_episodes,
            instrument,
            resolve_success_terms,
            termination_names,
        )
        from arena_recording.integrations.isaaclab_variations import variation_event

        env_cfg = load_cfg_from_registry(cfg.task, "env_cfg_entry_point")
        env_cfg.scene.num_envs = cfg.num_envs
        env_cfg.seed = cfg.seed
        env_cfg.sim.device = cfg.device
        _kit_less(env_cfg, cfg.device)
        for key, spec in OmegaConf.to_container(cfg.variations, resolve=True).items():
            setattr(env_cfg.events, f"variation_{key}", variation_event(key, **spec))
        success = resolve_success_terms(termination_names(env_cfg), cfg.success_terms)
        env = gym.make(cfg.task, cfg=instrument(env_cfg, success_terms=success)).unwrapped
        try:
            quota = _quota(env_episodes(env).identity, cfg.num_episodes)
            obs, _ = env.reset(seed=cfg.seed)
            policy = load_policy(
                cfg.policy,
                num_actions=env.single_action_space.shape[0],
                device=cfg.device,
                seed=cfg.seed,
            )
            tally = Tally(int(quota.sum()), success=bool(success))
            finished = torch.zeros_like(quota)
            while bool((finished < quota).any()):
                counted = finished < quota
                obs, _, terminated, truncated, _ = env.step(policy(obs["policy"]))
                ended = (terminated | truncated) & counted
                finished += ended.long()
                if ended.any():
                    won = [_fired(env, name, terminated, truncated) for name in success]
                    won = torch.stack(won).any(0) & ended if won else torch.zeros_like(ended)
                    tally.add(int(ended.sum()), int(won.sum()))
        finally:
            env.close()  # records the running episodes and flushes, also on an error
    return tally


def _print_ranking() -> None:
    """The factor ranking and the report, from the records this job wrote."""
    session = active_session()
    if session is None:
        return
    try:
        from arena_recording.analysis.load import load
        from arena_recording.analysis.report import write_report
        from arena_recording.analysis.sensitivity import sensitivity
    except ImportError as err:
        log.warning("the factor ranking needs the analysis extra: %s", err)
        return
    recording = load(session.output_dir, columns=["success", "variations.*"])
    result = sensitivity(recording, "success")
    print(result.to_text())
    print(result.summary())
    print(f"report: {write_report(session.output_dir)}")


register()


@hydra.main(version_base=None, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    tally = evaluate(cfg)
    rate = tally.summary()
    if cfg.rank and tally.successes is not None:
        _print_ranking()
    return rate


if __name__ == "__main__":
    main()
