"""Variations: named randomized factors that own a sampler config, a scope and listeners.

Listeners live on the variation, not on its sampler, so ``apply_cfg`` can rebuild the sampler
and keep every subscription. Whoever needs to hear about new variations (a recording session)
registers with ``observe_variations``; variations built while it is registered report to it.

Example::

    mass = VariationBase(VariationCfg(key="object.mass", sampler=UniformCfg(0.5, 2.0)))
    values = mass.sample(torch.arange(4), seed=0, episode_in_env=torch.zeros(4, dtype=torch.long))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from arena_recording.core.sampling import (
    BernoulliCfg,
    ChoiceCfg,
    Listener,
    SamplerBase,
    Scope,
    sampler_cfg,
)


@dataclass
class VariationCfg:
    """A named factor: ``key`` (dotted, e.g. ``object.mass``), how it is sampled, and when."""

    key: str = ""
    sampler: Any = None
    scope: Scope = Scope.EPISODE
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.key or not isinstance(self.key, str):
            raise ValueError(f"variation key must be a non-empty string, got {self.key!r}")
        if self.sampler is None:
            raise ValueError(f"variation {self.key!r}: a sampler is required")
        try:
            self.sampler = sampler_cfg(self.sampler)
        except ValueError as err:
            raise ValueError(f"variation {self.key!r}: {err}") from None
        try:
            self.scope = Scope(self.scope)
        except ValueError:
            choices = [s.value for s in Scope]
            raise ValueError(
                f"variation {self.key!r}: scope {self.scope!r} is not one of {choices}"
            ) from None


VariationObserver = Callable[["VariationBase"], None]
_observers: list[VariationObserver] = []


def observe_variations(observer: VariationObserver) -> Callable[[], None]:
    """Call ``observer`` with every variation built from now on; returns the unsubscribe."""
    _observers.append(observer)
    return lambda: _observers.remove(observer)


class VariationBase:
    """A factor's live state: its sampler and the listeners that survive ``apply_cfg``."""

    def __init__(self, cfg: VariationCfg) -> None:
        self._listeners: list[Listener] = []
        self._apply(cfg)
        for observer in list(_observers):
            observer(self)

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
        """The choices a drawn index stands for (a choice of non-numbers), else ``None``."""
        sampler = self.cfg.sampler
        if isinstance(sampler, ChoiceCfg) and not sampler.numeric:
            return list(sampler.choices)
        return None

    def _apply(self, cfg: VariationCfg) -> None:
        self.cfg = cfg
        self._sampler = cfg.sampler.build(cfg.key)
        for listener in self._listeners:
            self._sampler.add_listener(listener)

    def apply_cfg(self, cfg: VariationCfg) -> None:
        """Rebuild the sampler from ``cfg``; every listener stays subscribed."""
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
        if self.scope is Scope.INTERVAL and step is None:
            raise ValueError(f"interval variation {self.key!r} needs the step of each draw")
        if self.scope is not Scope.BUILD and env_ids is not None and episode_in_env is None:
            raise ValueError(f"{self.scope} variation {self.key!r} needs episode_in_env")
        return self._sampler.sample(
            env_ids,
            seed=seed,
            episode_in_env=None if self.scope is Scope.BUILD else episode_in_env,
            draw_index=0 if step is None else step,
            scope=self.scope,
            device=device,
            dtype=dtype,
        )

    def schema(self) -> dict[str, Any]:
        """The factor schema that analysis reads instead of guessing from values."""
        kind = "continuous"
        if isinstance(self.cfg.sampler, ChoiceCfg):
            kind = "categorical"
        elif isinstance(self.cfg.sampler, BernoulliCfg):
            kind = "boolean"
        return {
            "key": self.key,
            "kind": kind,
            "shape": list(self._sampler.shape),
            "scope": self.scope.value,
            "enabled": self.enabled,
            **self.cfg.sampler.describe(),
        }


def build_variations(cfgs: Mapping[str, Any] | Sequence[Any]) -> list[VariationBase]:
    """Variations from configs or mappings; a mapping's key is the variation key by default."""
    items = cfgs.items() if isinstance(cfgs, Mapping) else ((None, c) for c in cfgs)
    built = []
    for key, spec in items:
        if isinstance(spec, VariationCfg):
            cfg = spec
        else:
            fields = dict(spec)
            fields.setdefault("key", key)
            cfg = VariationCfg(**fields)
        built.append(VariationBase(cfg))
    return built
