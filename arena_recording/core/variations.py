"""Variations: named randomized factors that own a sampler config, a scope and listeners.

Listeners live on the variation, not on its sampler, so ``apply_cfg`` can rebuild the sampler
and keep every subscription. A variation belongs to the env that draws it: the env's adapter
hands its variations to the recording session when it binds the env (``Session.bind``), and
only that env's recorder listens to them. Nothing is routed by key across the process, so a
variation no recording env was given is never recorded, and keys are unique within one env
(``unique_keys``). A replay sets ``override``: the variation's values then come from recorded
episodes instead of its sampler, and listeners hear them as draws (``arena_recording.core.replay``).

Example::

    mass = VariationBase(VariationCfg(key="object.mass", sampler=UniformCfg(low=0.5, high=2.0)))
    values = mass.sample(torch.arange(4), seed=0, episode_in_env=torch.zeros(4, dtype=torch.long))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from arena_recording.core.config import (
    SamplerType,
    Scope,
    VariationCfg,
    is_number,
    variation_cfg,
    variation_cfgs,
)
from arena_recording.core.sampling import Draw, Listener, OnDevice, SamplerBase, build_sampler
from arena_recording.errors import ConfigError

Override = Callable[..., torch.Tensor]
"""Values that replace a variation's draws: called like ``VariationBase.sample`` (see
``arena_recording.core.replay``), returns what the sampler would (indices for a choice)."""


class VariationBase:
    """A factor's live state: its sampler and the listeners that survive ``apply_cfg``."""

    def __init__(self, cfg: VariationCfg | Mapping[str, Any]) -> None:
        self._listeners: list[Listener] = []
        self.override: Override | None = None
        self._apply(cfg)

    @property
    def key(self) -> str:
        return self.cfg.key

    @property
    def scope(self) -> Scope:
        return self.cfg.scope

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    @property
    def sampler(self) -> SamplerBase:
        return self._sampler

    @property
    def labels(self) -> list[Any] | None:
        """The choices a drawn index stands for (a choice sampler), else ``None``.

        A choice draws indices, so records show each choice exactly as configured (``0.1``,
        never the float32 ``0.10000000149011612``); ``values`` maps indices for appliers.
        """
        sampler = self.cfg.sampler
        return list(sampler.choices) if sampler.type is SamplerType.choice else None

    def values(self, drawn: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """What drawn values stand for: numeric choices for indices, else ``drawn`` itself
        (the indices of non-numeric choices: an applier maps them)."""
        if self._numeric_labels is None:
            return drawn
        (table,) = self._numeric_labels.on(drawn.device)
        return table.to(dtype)[drawn]

    def _apply(self, cfg: VariationCfg | Mapping[str, Any]) -> None:
        self.cfg = cfg = variation_cfg(cfg)
        self._sampler = build_sampler(cfg.sampler, cfg.key)
        labels = self.labels
        numeric = labels and all(is_number(c) for c in labels)
        self._numeric_labels = (
            OnDevice(torch.tensor(labels, dtype=torch.float64)) if numeric else None
        )
        for listener in self._listeners:
            self._sampler.add_listener(listener)

    def apply_cfg(self, cfg: VariationCfg) -> None:
        """Rebuild the sampler from ``cfg``; every listener stays subscribed."""
        cfg = variation_cfg(cfg, key=self.key)
        if cfg.key != self.key:
            raise ValueError(f"apply_cfg cannot rename variation {self.key!r} to {cfg.key!r}")
        self._apply(cfg)

    def add_sample_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)
        self._sampler.add_listener(listener)

    def remove_sample_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)
        self._sampler.remove_listener(listener)

    def sample(
        self,
        env_ids: torch.Tensor | None,
        *,
        seed: int,
        episode_in_env: torch.Tensor | None = None,
        step: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw for ``env_ids`` in the episodes ``episode_in_env``.

        Build scope ignores episodes (``env_ids=None`` draws one value shared by all envs);
        interval scope needs ``step``, the step within the episode, which is also the draw index.
        """
        if self.scope is Scope.interval and step is None:
            raise ValueError(f"interval variation {self.key!r} needs the step of each draw")
        if self.scope is not Scope.build and env_ids is not None and episode_in_env is None:
            raise ValueError(f"{self.scope} variation {self.key!r} needs episode_in_env")
        if self.override is not None:
            return self._overridden(env_ids, episode_in_env, step, device, dtype)
        return self._sampler.sample(
            env_ids,
            seed=seed,
            episode_in_env=None if self.scope is Scope.build else episode_in_env,
            draw_index=0 if step is None else step,
            scope=self.scope,
            device=device,
            dtype=dtype,
        )

    def _overridden(
        self,
        env_ids: torch.Tensor | None,
        episode_in_env: torch.Tensor | None,
        step: torch.Tensor | None,
        device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The override's values instead of a draw; listeners hear them as a draw."""
        episodes = None if self.scope is Scope.build else episode_in_env
        values = self.override(
            env_ids, episode_in_env=episodes, step=step, device=device, dtype=dtype
        )
        draw = Draw(self.key, values, env_ids, self.scope, episodes, 0 if step is None else step)
        for listener in self._listeners:
            listener(draw)
        return values

    def schema(self) -> dict[str, Any]:
        """The factor schema that analysis reads instead of guessing from values."""
        return {
            "key": self.key,
            "shape": list(self._sampler.shape),
            "scope": self.scope.value,
            "enabled": self.enabled,
            **self.cfg.sampler.describe(),
        }


def build_variations(
    cfgs: Mapping[str, Any] | Sequence[Any], path: str = ""
) -> list[VariationBase]:
    """Variations from configs or mappings; a mapping's key is the variation key by default.
    ``path`` is where ``cfgs`` sits in the config (``variations``): errors name it."""
    return [VariationBase(cfg) for cfg in variation_cfgs(cfgs, path)]


def unique_keys(variations: Iterable[VariationBase], where: str = "this env") -> None:
    """Refuse two variations with one key in one env: their draws could not be told apart.

    Example::

        unique_keys([*env_variations, new_variation], "the env")  # ConfigError naming the key
    """
    seen: dict[str, VariationBase] = {}
    for variation in variations:
        other = seen.setdefault(variation.key, variation)
        if other is not variation:
            raise ConfigError(
                variation.key,
                f"two variations of {where} have this key; each variation of an env needs its "
                "own key (records hold one value per key)",
            )
