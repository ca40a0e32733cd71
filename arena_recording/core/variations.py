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

An adapter drawing several variations for one reset batch calls ``sample_variations``: the same
values and notifications as each ``sample`` in turn, computed together (on CUDA one kernel).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from arena_recording.core.config import (
    SamplerType,
    Scope,
    VariationCfg,
    is_number,
    variation_cfg,
    variation_cfgs,
)
from arena_recording.core.sampling import (
    Draw,
    Listener,
    OnDevice,
    SamplerBase,
    batch_draw,
    batch_uniforms,
    build_sampler,
)
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
        drawn: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw for ``env_ids`` in the episodes ``episode_in_env``.

        Build scope ignores episodes (``env_ids=None`` draws one value shared by all envs);
        interval scope needs ``step``, the step within the episode, which is also the draw index.
        ``drawn``: this draw's values, computed already (``draws_for``); an override ignores
        them.
        """
        self._check(env_ids, episode_in_env, step)
        if self.override is not None:
            return self._overridden(env_ids, episode_in_env, step, device, dtype)
        return self._sampler.sample(
            env_ids,
            seed=seed,
            episode_in_env=self._episodes(episode_in_env),
            draw_index=0 if step is None else step,
            scope=self.scope,
            device=device,
            dtype=dtype,
            drawn=drawn,
        )

    @property
    def batchable(self) -> bool:
        """Whether a batched draw may compute this variation's values: it draws from its
        sampler (no replay override, no subclass drawing otherwise)."""
        return self.override is None and type(self).sample is VariationBase.sample

    def _check(
        self,
        env_ids: torch.Tensor | None,
        episode_in_env: torch.Tensor | None,
        step: torch.Tensor | None,
    ) -> None:
        if self.scope is Scope.interval and step is None:
            raise ValueError(f"interval variation {self.key!r} needs the step of each draw")
        if self.scope is not Scope.build and env_ids is not None and episode_in_env is None:
            raise ValueError(f"{self.scope} variation {self.key!r} needs episode_in_env")

    def _episodes(self, episode_in_env: torch.Tensor | None) -> torch.Tensor | None:
        """The episodes the sampler draws for: none at build scope."""
        return None if self.scope is Scope.build else episode_in_env

    def _overridden(
        self,
        env_ids: torch.Tensor | None,
        episode_in_env: torch.Tensor | None,
        step: torch.Tensor | None,
        device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The override's values instead of a draw; listeners hear them as a draw."""
        episodes = self._episodes(episode_in_env)
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


def draws_for(
    variations: Sequence[VariationBase],
    env_ids: torch.Tensor | None,
    *,
    seed: int,
    episode_in_env: torch.Tensor | None = None,
    step: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[VariationBase, torch.Tensor]:
    """The values of the ``batchable`` ones of ``variations`` for one batch, computed together
    per scope among them (``batch_draw``: on CUDA one kernel); pass each back as
    ``variation.sample(..., drawn=...)``, which notifies the listeners.

    The others (overridden) get none: they draw as usual. Arguments are ``sample``'s.
    """
    by_scope: dict[Scope, list[VariationBase]] = {}
    for variation in variations:
        if variation.batchable:
            variation._check(env_ids, episode_in_env, step)  # raise before drawing any
            by_scope.setdefault(variation.scope, []).append(variation)
    drawn: dict[VariationBase, torch.Tensor] = {}
    for group in by_scope.values():
        values = batch_draw(
            [v.sampler for v in group],
            env_ids,
            seed=seed,
            episode_in_env=group[0]._episodes(episode_in_env),
            draw_index=0 if step is None else step,
            device=device,
            dtype=dtype,
        )
        drawn.update(zip(group, values, strict=True))
    return drawn


class DrawAhead:
    """Draws a CPU env's episode-scope variations for every env's next ``episodes`` episodes in
    one generator call, so that a reset's draw is a lookup.

    On the CPU a draw costs about 100 µs per generator call whatever its size (numpy calls on
    a few values), so that call dominates a reset batch's draw. A draw is a pure function of
    (seed, key, env, episode), so values drawn ahead are the values: bit for bit, with the same
    ``Draw`` notifications, at the reset that opens their episode (nothing is notified ahead).
    When a batch asks for an episode outside an env's window (or the seed, a sampler or the
    number of envs changed), every env's window moves to its next episode in one call. Give
    one to ``sample_variations`` per env; CUDA draws ignore it (there a draw is one launch).

    Example::

        ahead = DrawAhead()
        drawn = sample_variations(variations, env_ids, seed=7, episode_in_env=eps, ahead=ahead)
    """

    def __init__(self, episodes: int = 16) -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        self.episodes = episodes
        self._seed: int | None = None
        self._samplers: dict[VariationBase, Any] = {}  # the sampler each column was drawn with
        # One row per (env, episode held), every variation's values side by side in float64
        # (indices and booleans are exact there), and where each variation's columns are. A
        # lookup touches a few rows: numpy does it in a fraction of torch's per-call cost.
        self._table = np.zeros((0, 0))
        self._columns: dict[VariationBase, tuple[slice, torch.dtype]] = {}  # exact dtype
        self._first = np.zeros(0, dtype=np.int64)  # first episode held, per env
        self._next = np.zeros(0, dtype=np.int64)  # each env's next episode to draw

    def takes(self, variation: VariationBase, env_ids: torch.Tensor | None, step: Any) -> bool:
        """Whether this draw of ``variation`` can be looked up: an episode-scope draw from a
        built-in sampler, at draw index 0, on the CPU."""
        return (
            env_ids is not None
            and env_ids.device.type == "cpu"
            and step is None
            and variation.scope is Scope.episode
            and variation.batchable
            and hasattr(variation.sampler, "transform")
        )

    def values(
        self,
        variations: Sequence[VariationBase],
        env_ids: torch.Tensor,
        episode_in_env: torch.Tensor,
        seed: int,
        dtype: torch.dtype = torch.float32,
    ) -> dict[VariationBase, torch.Tensor]:
        """Each variation's values for a (non-empty) batch, as ``sample`` returns them in
        ``dtype``."""
        ids = env_ids.numpy().astype(np.int64, copy=False)
        episodes = np.asarray(episode_in_env, dtype=np.int64)
        offset = self._offset(variations, ids, episodes, seed)
        if offset is None:
            self._fill(variations, ids, episodes, seed)
            offset = episodes - self._first[ids]
        rows = self._table[offset + ids * self.episodes]
        self._next[ids] = episodes + 1
        out = {}
        float_dtype = _NUMPY.get(dtype)
        for v in variations:
            columns, exact = self._columns[v]
            values = rows[:, columns].reshape(-1, *v.sampler.shape)
            if exact != torch.float64:  # indices or booleans
                out[v] = torch.from_numpy(values.astype(_NUMPY[exact]))
            elif float_dtype is not None:
                out[v] = torch.from_numpy(values.astype(float_dtype))
            else:  # a float dtype numpy lacks
                out[v] = v.sampler.cast(torch.from_numpy(values), dtype)
        return out

    def _offset(
        self,
        variations: Sequence[VariationBase],
        env_ids: np.ndarray,
        episodes: np.ndarray,
        seed: int,
    ) -> np.ndarray | None:
        """Each row's episode within its env's window; ``None`` when a window must move."""
        if seed != self._seed or any(self._samplers.get(v) is not v.sampler for v in variations):
            return None
        if env_ids.max() >= self._first.shape[0] or env_ids.min() < 0:
            return None
        offset = episodes - self._first[env_ids]
        return offset if offset.min() >= 0 and offset.max() < self.episodes else None

    def _fill(
        self,
        variations: Sequence[VariationBase],
        env_ids: np.ndarray,
        episodes: np.ndarray,
        seed: int,
    ) -> None:
        """Every env's window from its next episode (the batch's from the episode it asks)."""
        num_envs = max(self._first.shape[0], int(env_ids.max()) + 1)
        first = np.zeros(num_envs, dtype=np.int64)
        first[: self._next.shape[0]] = self._next
        first[env_ids] = episodes
        depth = self.episodes
        env_grid = torch.arange(num_envs).repeat_interleave(depth)
        episode_grid = torch.from_numpy((first[:, None] + np.arange(depth)).reshape(-1))
        samplers = [v.sampler for v in variations]
        uniforms = batch_uniforms(samplers, env_grid, seed=seed, episode_in_env=episode_grid)
        blocks, self._columns, start = [], {}, 0
        for variation, sampler, u in zip(variations, samplers, uniforms, strict=True):
            exact = sampler.transform(u)
            blocks.append(exact.reshape(num_envs * depth, -1).to(torch.float64))
            width = blocks[-1].shape[1]
            self._columns[variation] = (slice(start, start + width), exact.dtype)
            start += width
        self._table = torch.cat(blocks, dim=1).numpy()
        self._samplers = dict(zip(variations, samplers, strict=True))
        self._seed, self._first = seed, first
        self._next = first.copy()


_NUMPY = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}


def sample_variations(
    variations: Sequence[VariationBase],
    env_ids: torch.Tensor | None,
    *,
    seed: int,
    episode_in_env: torch.Tensor | None = None,
    step: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    ahead: DrawAhead | None = None,
) -> dict[str, torch.Tensor]:
    """Draw several variations for one batch: each ``variation.sample(env_ids, ...)`` in turn,
    with the values of all computed together (``draws_for``: on CUDA one kernel per scope
    present, since there each launch costs more host time than the draw).

    Values and listener notifications (same ``Draw`` fields, same order) are those of the
    separate calls; an overridden variation draws from its override, a disabled one is drawn
    like ``sample`` draws it. Keys must be unique (a ``ConfigError`` names a repeated one).
    Returns each variation's values by key.

    ``ahead`` (a ``DrawAhead``) looks up the CPU episode-scope draws it can take instead.

    Example::

        drawn = sample_variations([mass, friction], env_ids, seed=7, episode_in_env=episodes)
        masses, frictions = drawn["object.mass"], drawn["table.friction"]
    """
    unique_keys(variations, "this batch")
    found: dict[VariationBase, torch.Tensor] = {}
    if ahead is not None and episode_in_env is not None and env_ids is not None and env_ids.numel():
        looked_up = [v for v in variations if ahead.takes(v, env_ids, step)]
        if looked_up:
            found = ahead.values(looked_up, env_ids, episode_in_env, seed, dtype)
    kw = {"seed": seed, "episode_in_env": episode_in_env, "step": step, "device": device}
    found |= draws_for([v for v in variations if v not in found], env_ids, **kw, dtype=dtype)
    return {v.key: v.sample(env_ids, **kw, dtype=dtype, drawn=found.get(v)) for v in variations}
