"""gymnasium adapter: apply variations to the sub-envs that reset, and record their episodes.

Works with every autoreset mode of gymnasium's ``VectorEnv``: the episode of a sub-env closes
on the step that reports it terminated or truncated; its next identity opens and its
episode-scope variations are drawn and set right away, before the step that starts the next
episode. Lengths count the same steps as gymnasium's ``RecordEpisodeStatistics``. A variation
sets the sub-env attribute named like its key, or the one its ``apply`` block names
(``apply: {attribute: force_mag}``).

With an active session the wrapper binds its env to it with its variations: only their draws
are recorded with its episodes (keys must be unique, a ``ConfigError`` names a repeated one).
With no active session the wrapper only applies variations; with neither, it passes through.

The seed variations draw with is ``seed`` when given, else the seed of the first
``reset(seed=...)``, else one derived from the session's run id (``resolve_seed``: written to
the manifest with the env); it is fixed from then on, so later ``reset(seed=...)`` calls
reseed the sub-envs only. Build-scope variations are drawn once the seed is known.

Example::

    env = VariationsWrapper(
        gym.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync"),
        build_variations({"gravity": {"sampler": {"type": "uniform", "low": 8.0, "high": 12.0}}}),
        seed=0,
        success="truncated",
    )
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from arena_recording.core.config import unknown_keys
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.sampling import Scope
from arena_recording.core.session import active_session, resolve_seed
from arena_recording.core.variations import (
    DrawAhead,
    VariationBase,
    sample_variations,
    unique_keys,
)
from arena_recording.errors import ConfigError

TERMINATIONS = ("terminated", "truncated")
log = logging.getLogger(__name__)


def _reset_seed(seed: int | list[int | None] | None) -> int | None:
    """The variation seed a ``reset(seed=...)`` gives: the int, or one int for a list of
    per-sub-env seeds (a pure function of the list)."""
    if seed is None or isinstance(seed, int | np.integer):
        return None if seed is None else int(seed)
    entropy = [int(s) for s in seed if s is not None]
    if not entropy:
        return None
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) & 0x7FFFFFFF


def _attribute(variation: VariationBase) -> str:
    """The sub-env attribute a variation sets: ``apply.attribute``, by default its key."""
    if variation.scope is Scope.interval:
        raise ConfigError(
            f"{variation.key}.scope",
            "interval scope is not supported for gymnasium envs (no step hook); "
            "use episode or build scope",
        )
    apply = variation.cfg.apply or {}
    unknown_keys(apply, ("attribute",), f"{variation.key}.apply")
    return str(apply.get("attribute") or variation.key)


class VariationsWrapper(VectorWrapper):
    """Draws variations per (env, episode), sets them on the sub-envs, records when a session
    is active.

    ``seed`` may be left out: see the module docstring for where the seed then comes from.
    ``success`` is ``"terminated"``, ``"truncated"``, the name of a boolean info key (such as
    ``"is_success"``), or ``None`` when the env has no notion of success. ``num_episodes``
    gives each env a fixed quota (see ``EpisodeIdentity``); ``identity.quota_met()`` says when
    the evaluation is complete. With no session, no variations and no quota, steps and resets
    pass straight through (``identity`` and ``lengths`` then stay as built).
    """

    def __init__(
        self,
        env: VectorEnv,
        variations: Sequence[VariationBase] = (),
        *,
        seed: int | None = None,
        success: str | None = None,
        num_episodes: int | None = None,
    ) -> None:
        super().__init__(env)
        unique_keys(variations, "the env")
        self.seed = seed
        self._variations_in = variations
        self.success = success
        self.variations = [v for v in variations if v.enabled]
        self.attributes = {v.key: _attribute(v) for v in self.variations}
        self.autoreset_mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.identity = EpisodeIdentity(self.num_envs, num_episodes=num_episodes)
        self._ahead = DrawAhead()  # each reset's draws are lookups (CPU envs)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._resetting = np.zeros(0, dtype=np.int64)  # NEXT_STEP: envs that reset this step
        self._current = {v.key: [None] * self.num_envs for v in self.variations}
        self._session = active_session()
        self.recorder = None
        self._started = False
        # Nothing to draw, record or count: steps and resets go straight through.
        self._passthrough = self._session is None and not self.variations and num_episodes is None
        if seed is not None:
            self._start(seed)

    def _start(self, seed: int | None) -> None:
        """Fix the seed, start recording (with a session) and draw the build-scope variations."""
        self._started = True
        self.seed = resolve_seed(seed)
        if self._session is not None:
            self.recorder = self._session.bind(
                self.identity,
                seed=self.seed,
                env=self,
                termination_names=TERMINATIONS,
                variations=self._variations_in,
            )
        self._draw(torch.arange(self.num_envs), Scope.build)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all sub-envs (or ``options["reset_mask"]``); running episodes end as aborted."""
        if not self._started:
            self._start(_reset_seed(seed))
        elif seed is not None and _reset_seed(seed) != self.seed and not self._passthrough:
            log.warning(
                "reset(seed=%s): variations keep drawing with seed %d (fixed for the run); the "
                "sub-envs are reseeded",
                seed,
                self.seed,
            )
        if not self._passthrough:
            mask = None if options is None else options.get("reset_mask")
            ids = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
            none = np.zeros(len(ids), dtype=bool)
            self._end(ids, none, none, None)
            self._resetting = np.zeros(0, dtype=np.int64)
        # a copy: vector envs pop reset_mask, and wrappers above us still need to see it
        return self.env.reset(seed=seed, options=None if options is None else dict(options))

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._passthrough:
            return self.env.step(actions)
        if not self._started:
            self._start(None)
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self.lengths += 1
        if len(self._resetting):
            self.lengths[self._resetting] = 0  # this step only reset them
        done = terminated | truncated
        if done.any():
            ids = np.flatnonzero(done)
            success = self._success(ids, terminated, truncated, info)
            self._end(ids, terminated[ids], truncated[ids], success)
            if self.autoreset_mode is AutoresetMode.NEXT_STEP:
                self._resetting = ids
        elif len(self._resetting):
            self._resetting = np.zeros(0, dtype=np.int64)
        return obs, rewards, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        """Running episodes end as aborted records; then the env stops recording."""
        if self.recorder is not None:
            running = np.flatnonzero(self.lengths > 0)
            none = np.zeros(len(running), dtype=bool)
            self._end(running, none, none, None)
            self._session.unbind(self.recorder)
            self.recorder = None
        super().close(**kwargs)

    def _success(
        self, ids: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, info: dict[str, Any]
    ) -> np.ndarray | None:
        if self.success is None:
            return None
        if self.success in TERMINATIONS:
            return (terminated if self.success == "terminated" else truncated)[ids]
        if self.autoreset_mode is AutoresetMode.SAME_STEP and "final_info" in info:
            info = info["final_info"]
        values = info.get(self.success)
        if values is None:
            return np.zeros(len(ids), dtype=bool)
        present = info.get(f"_{self.success}", np.ones(self.num_envs, dtype=bool))
        return (np.asarray(values, dtype=bool) & present)[ids]

    def _end(
        self,
        ids: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        success: np.ndarray | None,
    ) -> None:
        """Close the episodes of ``ids``, open the next ones, draw and set their variations."""
        env_ids = torch.from_numpy(ids)
        length = torch.from_numpy(self.lengths[ids])
        if self.recorder is not None:
            termination = np.where(terminated, 0, np.where(truncated, 1, -1))
            self.recorder.close(
                EpisodeEnd(
                    env_ids=env_ids,
                    length=length,
                    terminated=torch.from_numpy(np.asarray(terminated)),
                    truncated=torch.from_numpy(np.asarray(truncated)),
                    termination=torch.from_numpy(termination),
                    success=None if success is None else torch.from_numpy(np.asarray(success)),
                )
            )
        self.identity.advance(env_ids, started=length > 0)
        self.lengths[ids] = 0
        self._draw(env_ids, Scope.episode)

    def _draw(self, env_ids: torch.Tensor, scope: Scope) -> None:
        """Draw the variations of ``scope`` for ``env_ids`` (looked up, or one generator call
        for all of them) and set each on the sub-envs."""
        variations = [v for v in self.variations if v.scope is scope]
        if not variations:
            return
        episodes = self.identity.episode_in_env[env_ids]
        drawn = sample_variations(
            variations,
            env_ids,
            seed=self.seed,
            episode_in_env=episodes,
            dtype=torch.float64,
            ahead=self._ahead,
        )
        for variation in variations:
            values = drawn[variation.key].tolist()
            labels = variation.labels
            if labels is not None:
                values = [labels[i] for i in values]
            current = self._current[variation.key]
            for env_id, value in zip(env_ids.tolist(), values, strict=True):
                current[env_id] = value
            self.unwrapped.set_attr(self.attributes[variation.key], list(current))
