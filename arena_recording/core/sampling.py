"""Samplers: deterministic, vectorized draws of variation values, with listeners.

A draw is a pure function of ``(seed, key, env id, episode in env, draw index)``: uniforms come
from a counter-based hash instead of a stateful generator, so the value an env gets for an
episode does not depend on which other envs reset at the same time or on which other
variations are enabled. That is what makes "rerun the failing episodes" possible.

Example::

    cfg = UniformCfg(low=0.2, high=0.8)
    sampler = cfg.build(key="object.friction")
    sampler.add_listener(lambda draw: print(draw.key, draw.values))
    values = sampler.sample(torch.tensor([0, 3]), seed=7, episode_in_env=torch.tensor([0, 2]))
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import torch

from arena_recording.core.philox import derive_key, philox_uniforms

_BUILD_EPISODE = -1  # episode index used for build-time draws


class Scope(StrEnum):
    """When a variation is drawn: once per build, at each reset, or during an episode."""

    BUILD = "build"
    EPISODE = "episode"
    INTERVAL = "interval"


@dataclass(frozen=True, slots=True)
class Draw:
    """One batch of values drawn by a sampler.

    ``env_ids`` is ``None`` for a build-time draw shared by every env; ``values`` then has no
    leading env dimension. Otherwise ``values[i]`` belongs to ``env_ids[i]``.
    """

    key: str
    values: torch.Tensor
    env_ids: torch.Tensor | None
    scope: Scope
    episode_in_env: torch.Tensor | None
    draw_index: torch.Tensor | int


Listener = Callable[[Draw], None]


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def counter_uniforms(
    seed: int,
    key_hash: int,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor | int,
    shape: Sequence[int],
) -> torch.Tensor:
    """Uniforms in the open interval (0, 1), float64, shape ``(len(env_ids), *shape)``.

    Philox4x32-10 keyed by ``(seed, key_hash)`` of the counter (env id, episode in env, draw
    index, component): adding envs, components or variations never shifts the values of the
    others, CPU and CUDA give the same bits, and a CUDA draw is two fused kernels with no host
    synchronization.
    """
    key = derive_key(seed, key_hash)
    u = philox_uniforms(key, env_ids, episode_in_env, draw_index, math.prod(shape))
    return u.reshape(env_ids.shape[0], *shape)


class SamplerBase(ABC):
    """Draws values for a batch of envs and tells its listeners what it drew.

    Subclasses implement ``_sample``, which maps uniforms to values; ``sample`` is the
    template method that produces the uniforms and notifies listeners.
    """

    def __init__(self, key: str, shape: tuple[int, ...]) -> None:
        self.key = key
        self.shape = shape
        self._key_hash = stable_hash(key)
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def sample(
        self,
        env_ids: torch.Tensor | None,
        *,
        seed: int,
        episode_in_env: torch.Tensor | None = None,
        draw_index: torch.Tensor | int = 0,
        scope: Scope = Scope.EPISODE,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw values for ``env_ids`` (``None``: one build-time value shared by all envs)."""
        if env_ids is None:
            ids = torch.full((1,), -1, dtype=torch.int64, device=device)
            episodes = torch.full((1,), _BUILD_EPISODE, dtype=torch.int64, device=device)
        else:
            ids = env_ids
            if episode_in_env is None:
                episodes = torch.full_like(ids, _BUILD_EPISODE, dtype=torch.int64)
            else:
                episodes = episode_in_env
        u = counter_uniforms(seed, self._key_hash, ids, episodes, draw_index, self.shape)
        values = self._sample(u, dtype)
        if env_ids is None:
            values = values[0]
        draw = Draw(self.key, values, env_ids, Scope(scope), episode_in_env, draw_index)
        for listener in self._listeners:
            listener(draw)
        return values

    @abstractmethod
    def _sample(self, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Map uniforms of shape ``(n, *shape)`` to values."""


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _broadcast_shape(*values: Any) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*(_as_tensor(v).shape for v in values)))


def _check(condition: bool, cfg: Any, message: str) -> None:
    if not condition:
        raise ValueError(f"{type(cfg).__name__}: {message}")


@dataclass
class SamplerCfg:
    """Base of the sampler configs: validates on construction and builds the live sampler."""

    type: ClassVar[str]

    def build(self, key: str) -> SamplerBase:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Distribution, bounds or choices, for the factor schema."""
        raise NotImplementedError


class _TransformSampler(SamplerBase):
    """A sampler whose values are ``transform(u)``; the configs below supply the transform."""

    def __init__(
        self, key: str, shape: tuple[int, ...], transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        super().__init__(key, shape)
        self._transform = transform

    def _sample(self, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        values = self._transform(u)
        return values if values.dtype in (torch.bool, torch.int64) else values.to(dtype)


def _bounded(low: Any, high: Any, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = _as_tensor(low), _as_tensor(high)
    _check(lo.ndim <= 1 and hi.ndim <= 1, cfg, "low and high must be scalars or vectors")
    _check(
        bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()), cfg, "bounds must be finite"
    )
    try:
        _broadcast_shape(lo, hi)
    except RuntimeError:
        _check(False, cfg, f"low {low!r} and high {high!r} have different lengths")
    _check(bool((lo <= hi).all()), cfg, f"low {low!r} must be <= high {high!r}")
    return lo, hi


@dataclass
class _BoundedCfg(SamplerCfg):
    """A distribution on ``[low, high]``: scalars or equal-length vectors."""

    low: Any = 0.0
    high: Any = 1.0

    def __post_init__(self) -> None:
        _bounded(self.low, self.high, self)

    def describe(self) -> dict[str, Any]:
        return {"distribution": self.type, "low": self.low, "high": self.high}


@dataclass
class UniformCfg(_BoundedCfg):
    """Uniform on ``[low, high]``; vector bounds give one factor component per entry."""

    type: ClassVar[str] = "uniform"

    def build(self, key: str) -> SamplerBase:
        lo, hi = _bounded(self.low, self.high, self)
        shape = _broadcast_shape(lo, hi)
        return _TransformSampler(key, shape, lambda u: lo.to(u.device) + u * (hi - lo).to(u.device))


@dataclass
class LogUniformCfg(_BoundedCfg):
    """Log-uniform on ``[low, high]`` with ``0 < low <= high`` (scale factors, stiffnesses)."""

    low: Any = 0.1
    high: Any = 10.0
    type: ClassVar[str] = "log_uniform"

    def __post_init__(self) -> None:
        lo, _ = _bounded(self.low, self.high, self)
        _check(bool((lo > 0).all()), self, f"low {self.low!r} must be > 0")

    def build(self, key: str) -> SamplerBase:
        lo, hi = _bounded(self.low, self.high, self)
        log_lo, log_span = lo.log(), hi.log() - lo.log()
        shape = _broadcast_shape(lo, hi)
        return _TransformSampler(
            key, shape, lambda u: (log_lo.to(u.device) + u * log_span.to(u.device)).exp()
        )


@dataclass
class NormalCfg(SamplerCfg):
    """Normal(mean, std), truncated to ``[low, high]`` when either bound is given."""

    mean: Any = 0.0
    std: Any = 1.0
    low: Any = None
    high: Any = None
    type: ClassVar[str] = "normal"

    def __post_init__(self) -> None:
        self._limits()

    def _limits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, std = _as_tensor(self.mean), _as_tensor(self.std)
        _check(bool(torch.isfinite(mean).all()), self, f"mean {self.mean!r} must be finite")
        _check(
            bool((std > 0).all() and torch.isfinite(std).all()),
            self,
            f"std {self.std!r} must be > 0",
        )
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        lo, hi = _as_tensor(low), _as_tensor(high)
        _check(bool((lo < hi).all()), self, f"low {self.low!r} must be < high {self.high!r}")
        normal = torch.distributions.Normal(0.0, 1.0)
        p_lo, p_hi = normal.cdf((lo - mean) / std), normal.cdf((hi - mean) / std)
        _check(bool((p_hi - p_lo > 1e-12).all()), self, "the truncation interval has no mass")
        return mean, std, p_lo.double(), p_hi.double()

    def build(self, key: str) -> SamplerBase:
        mean, std, p_lo, p_hi = self._limits()
        shape = _broadcast_shape(mean, std, p_lo, p_hi)

        def transform(u: torch.Tensor) -> torch.Tensor:
            d = u.device
            z = torch.special.ndtri(p_lo.to(d) + u * (p_hi - p_lo).to(d))
            return mean.to(d) + std.to(d) * z

        return _TransformSampler(key, shape, transform)

    def describe(self) -> dict[str, Any]:
        return {
            "distribution": "normal",
            "mean": self.mean,
            "std": self.std,
            "low": self.low,
            "high": self.high,
        }


@dataclass
class ChoiceCfg(SamplerCfg):
    """One of ``choices`` (optionally weighted). Numbers come out as values, other choices as
    their index into ``choices``; records always show the choice itself."""

    choices: Any = None
    weights: Any = None
    type: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        self._cumulative()

    @property
    def numeric(self) -> bool:
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices)

    def _cumulative(self) -> torch.Tensor:
        _check(
            isinstance(self.choices, Sequence) and not isinstance(self.choices, str),
            self,
            f"choices must be a list, got {self.choices!r}",
        )
        _check(len(self.choices) > 0, self, "choices must not be empty")
        weights = [1.0] * len(self.choices) if self.weights is None else list(self.weights)
        _check(
            len(weights) == len(self.choices),
            self,
            f"{len(weights)} weights for {len(self.choices)} choices",
        )
        w = _as_tensor(weights)
        _check(
            bool((w >= 0).all() and torch.isfinite(w).all()),
            self,
            f"weights {self.weights!r} must be >= 0",
        )
        _check(float(w.sum()) > 0, self, "weights must not all be zero")
        cumulative = w.cumsum(0) / w.sum()
        cumulative[-1] = 1.0
        return cumulative

    def build(self, key: str) -> SamplerBase:
        cumulative = self._cumulative()
        values = _as_tensor(self.choices) if self.numeric else None

        def transform(u: torch.Tensor) -> torch.Tensor:
            index = torch.searchsorted(cumulative.to(u.device), u, right=True)
            index = index.clamp_max(len(cumulative) - 1)
            return index if values is None else values.to(u.device)[index]

        return _TransformSampler(key, (), transform)

    def describe(self) -> dict[str, Any]:
        return {"distribution": "choice", "choices": list(self.choices), "weights": self.weights}


@dataclass
class BernoulliCfg(SamplerCfg):
    """True with probability ``p``."""

    p: float = 0.5
    type: ClassVar[str] = "bernoulli"

    def __post_init__(self) -> None:
        _check(0.0 <= self.p <= 1.0, self, f"p {self.p!r} must be in [0, 1]")

    def build(self, key: str) -> SamplerBase:
        return _TransformSampler(key, (), lambda u: u < self.p)

    def describe(self) -> dict[str, Any]:
        return {"distribution": "bernoulli", "p": self.p}


@dataclass
class ConstantCfg(SamplerCfg):
    """Always ``value`` (a scalar or a vector): pins a factor without removing it from records."""

    value: Any = 0.0
    type: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        v = _as_tensor(self.value)
        _check(
            v.ndim <= 1 and bool(torch.isfinite(v).all()),
            self,
            f"value {self.value!r} must be finite",
        )

    def build(self, key: str) -> SamplerBase:
        value = _as_tensor(self.value)
        shape = tuple(value.shape)
        return _TransformSampler(key, shape, lambda u: value.to(u.device).expand(u.shape))

    def describe(self) -> dict[str, Any]:
        return {"distribution": "constant", "value": self.value}


SAMPLER_TYPES: dict[str, type[SamplerCfg]] = {
    cls.type: cls
    for cls in (UniformCfg, LogUniformCfg, NormalCfg, ChoiceCfg, BernoulliCfg, ConstantCfg)
}


def sampler_cfg(spec: SamplerCfg | dict[str, Any]) -> SamplerCfg:
    """A sampler config from itself or from a mapping with a ``type`` key (as YAML gives).

    >>> sampler_cfg({"type": "uniform", "low": 0.5, "high": 2.0})
    UniformCfg(low=0.5, high=2.0)
    """
    if isinstance(spec, SamplerCfg):
        return spec
    fields = dict(spec)
    kind = fields.pop("type", None)
    if kind not in SAMPLER_TYPES:
        raise ValueError(f"unknown sampler type {kind!r}; expected one of {sorted(SAMPLER_TYPES)}")
    try:
        return SAMPLER_TYPES[kind](**fields)
    except TypeError as err:
        raise ValueError(f"sampler type {kind!r}: {err}") from None
