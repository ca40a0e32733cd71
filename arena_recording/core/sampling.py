"""Samplers: deterministic, vectorized draws of variation values, with listeners.

A draw is a pure function of ``(seed, key, env id, episode in env, draw index)``: uniforms come
from a counter-based hash instead of a stateful generator, so the value an env gets for an
episode does not depend on which other envs reset at the same time or on which other
variations are enabled. That is what makes "rerun the failing episodes" possible.

Example::

    sampler = build_sampler(UniformCfg(low=0.2, high=0.8), key="object.friction")
    sampler.add_listener(lambda draw: print(draw.key, draw.values))
    values = sampler.sample(torch.tensor([0, 3]), seed=7, episode_in_env=torch.tensor([0, 2]))

Several samplers drawing for one batch share one generator call (``batch_draw``): each gets
the values it would have drawn itself, passed back in as ``drawn=``. On CUDA the built-in
samplers' draws, uniforms and transforms together, are one Triton kernel for the whole batch
(``arena_recording.core.fused``).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from arena_recording.core import fused, philox
from arena_recording.core.config import SamplerCfg, SamplerType, Scope
from arena_recording.core.fused import Kind, TransformSpec
from arena_recording.core.philox import derive_key, philox_uniforms

_BUILD_EPISODE = -1  # episode index used for build-time draws


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
    others, CPU and CUDA give the same bits, and a CUDA draw is one Triton kernel with no host
    synchronization.
    """
    key = derive_key(seed, key_hash)
    u = philox_uniforms(key, env_ids, episode_in_env, draw_index, math.prod(shape))
    return u.reshape(env_ids.shape[0], *shape)


def _counters(
    env_ids: torch.Tensor | None,
    episode_in_env: torch.Tensor | None,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The env and episode counter words of a draw: ``-1`` for a build-time draw (no env ids)
    and for a draw without episodes."""
    if env_ids is None:
        ids = torch.full((1,), -1, dtype=torch.int64, device=device)
        return ids, torch.full((1,), _BUILD_EPISODE, dtype=torch.int64, device=device)
    if episode_in_env is None:
        return env_ids, torch.full_like(env_ids, _BUILD_EPISODE, dtype=torch.int64)
    return env_ids, episode_in_env


def batch_uniforms(
    samplers: Sequence[SamplerBase],
    env_ids: torch.Tensor | None,
    *,
    seed: int,
    episode_in_env: torch.Tensor | None = None,
    draw_index: torch.Tensor | int = 0,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """The uniforms each of ``samplers`` would compute in ``sample`` for this batch, from one
    generator call instead of one per sampler (on CUDA a kernel launch costs more host time
    than the draw itself).

    Arguments are ``sample``'s; entry ``i`` is a float64 view of shape ``(n, *samplers[i].shape)``
    (``n = 1`` for a build-time draw, ``env_ids=None``), bit-identical to ``counter_uniforms``
    of that sampler. A built-in sampler's ``transform`` maps them to its exact values
    (``batch_draw`` does both, and its values go back through ``sample(..., drawn=...)``).

    Example::

        u_mass, u_pos = batch_uniforms([mass, pos], env_ids, seed=7, episode_in_env=episodes)
        masses = mass.transform(u_mass)
    """
    ids, episodes = _counters(env_ids, episode_in_env, device)
    if not samplers:
        return []
    numels = [math.prod(s.shape) for s in samplers]
    keys = [derive_key(seed, s._key_hash) for s in samplers]
    u = philox.philox_uniforms_multi(keys, numels, ids, episodes, draw_index)
    n = ids.shape[0]
    blocks = u.split(numels, dim=1)
    return [b.reshape(n, *s.shape) for b, s in zip(blocks, samplers, strict=True)]


def batch_draw(
    samplers: Sequence[SamplerBase],
    env_ids: torch.Tensor | None,
    *,
    seed: int,
    episode_in_env: torch.Tensor | None = None,
    draw_index: torch.Tensor | int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """The values each of ``samplers`` would draw in ``sample`` for this batch, computed
    together: on CUDA one fused kernel for the built-in samplers (uniforms and transforms),
    otherwise one generator call and each sampler's transform.

    Entry ``i`` has shape ``(n, *samplers[i].shape)`` (``n = 1`` for a build-time draw); pass it
    back as ``samplers[i].sample(..., drawn=entry)``, which notifies the listeners.

    Example::

        masses, positions = batch_draw([mass, pos], env_ids, seed=7, episode_in_env=episodes)
        mass.sample(env_ids, seed=7, episode_in_env=episodes, drawn=masses)
    """
    out: dict[int, torch.Tensor] = {}
    specs = [getattr(s, "spec", None) for s in samplers]
    fusable = [i for i, spec in enumerate(specs) if spec is not None]
    where = torch.device(device or "cpu") if env_ids is None else env_ids.device
    if fusable and fused.available(where, dtype):
        ids, episodes = _counters(env_ids, episode_in_env, device)
        keys = [derive_key(seed, samplers[i]._key_hash) for i in fusable]
        values = fused.draw([specs[i] for i in fusable], keys, ids, episodes, draw_index, dtype)
        if values is not None:
            for i, v in zip(fusable, values, strict=True):
                out[i] = v.reshape(ids.shape[0], *samplers[i].shape)
    rest = [s for i, s in enumerate(samplers) if i not in out]
    if rest:
        kw = {"seed": seed, "episode_in_env": episode_in_env, "draw_index": draw_index}
        uniforms = iter(batch_uniforms(rest, env_ids, **kw, device=device))
    return [
        out[i] if i in out else s._sample(next(uniforms), dtype) for i, s in enumerate(samplers)
    ]


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
        scope: Scope = Scope.episode,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        drawn: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw values for ``env_ids`` (``None``: one build-time value shared by all envs).

        ``drawn``: this draw's values, computed already (``batch_draw``, shape ``(n, *shape)``,
        ``n = 1`` for a build-time draw); they are notified and returned instead of drawing.
        """
        if drawn is None:
            (values,) = batch_draw(
                [self],
                env_ids,
                seed=seed,
                episode_in_env=episode_in_env,
                draw_index=draw_index,
                device=device,
                dtype=dtype,
            )
        else:
            n = 1 if env_ids is None else env_ids.shape[0]
            if drawn.shape != (n, *self.shape):
                raise ValueError(
                    f"{self.key}: drawn values of shape {tuple(drawn.shape)} for a draw of "
                    f"shape {(n, *self.shape)}"
                )
            values = drawn  # (``to`` costs a call even when the dtype is already right)
            if drawn.is_floating_point() and drawn.dtype != dtype:
                values = drawn.to(dtype)
        if env_ids is None:
            values = values[0]
        return self.emit(Draw(self.key, values, env_ids, Scope(scope), episode_in_env, draw_index))

    def emit(self, draw: Draw) -> torch.Tensor:
        """Tell the listeners about ``draw`` (values found otherwise, e.g. drawn ahead); its
        values."""
        for listener in self._listeners:
            listener(draw)
        return draw.values

    @abstractmethod
    def _sample(self, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Map uniforms of shape ``(n, *shape)`` to values."""


def _as_tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


class OnDevice:
    """A transform's constant tensors, copied to each device once, at its first draw there.

    A per-draw ``.to(device)`` of a host tensor is a pageable host-to-device copy, which waits
    for the device's queue: cached, a draw has no host synchronization.

    Example::

        bounds = OnDevice(lo, span)
        lo_d, span_d = bounds.on(u.device)
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        self._cpu = tensors
        self._cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        cached = self._cache.get(device)
        if cached is None:
            cached = self._cache[device] = tuple(t.to(device) for t in self._cpu)
        return cached


class _TransformSampler(SamplerBase):
    """A sampler whose values are ``transform(u)``; ``build_sampler`` supplies the transform,
    and its ``spec``, the same transform as the fused CUDA draw computes it."""

    def __init__(
        self,
        key: str,
        shape: tuple[int, ...],
        transform: Callable[[torch.Tensor], torch.Tensor],
        spec: TransformSpec,
    ) -> None:
        super().__init__(key, shape)
        self._transform = transform
        self.spec = spec

    def _sample(self, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.cast(self.transform(u), dtype)

    def transform(self, u: torch.Tensor) -> torch.Tensor:
        """The values of uniforms ``u`` before ``cast``: float64, or indices, or booleans."""
        return self._transform(u)

    @staticmethod
    def cast(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Floating values in ``dtype``; indices and booleans as they are."""
        return values if values.dtype in (torch.bool, torch.int64) else values.to(dtype)


Transform = Callable[[torch.Tensor], torch.Tensor]
Built = tuple[Transform, TransformSpec]


def _per_component(shape: tuple[int, ...], *values: torch.Tensor) -> list[list[float]]:
    """Each of ``values`` broadcast to ``shape`` and flattened: one number per component."""
    return [torch.broadcast_to(v, shape).reshape(-1).tolist() for v in values]


def _uniform(cfg: SamplerCfg) -> Built:
    lo, hi = _as_tensor(cfg.low), _as_tensor(cfg.high)
    bounds = OnDevice(lo, hi - lo)

    def transform(u: torch.Tensor) -> torch.Tensor:
        low, span = bounds.on(u.device)
        return low + u * span

    return transform, TransformSpec.of(Kind.affine, *_per_component(cfg.shape, lo, hi - lo))


def _log_uniform(cfg: SamplerCfg) -> Built:
    log_lo = _as_tensor(cfg.low).log()
    log_span = _as_tensor(cfg.high).log() - log_lo
    bounds = OnDevice(log_lo, log_span)

    def transform(u: torch.Tensor) -> torch.Tensor:
        low, span = bounds.on(u.device)
        return (low + u * span).exp()

    spec = TransformSpec.of(Kind.exp_affine, *_per_component(cfg.shape, log_lo, log_span))
    return transform, spec


def _normal(cfg: SamplerCfg) -> Built:
    """Inverse-CDF sampling restricted to ``[cdf(low), cdf(high)]`` (all of it untruncated)."""
    mean, std = _as_tensor(cfg.mean), _as_tensor(cfg.std)
    lo = _as_tensor(-math.inf if cfg.low is None else cfg.low)
    hi = _as_tensor(math.inf if cfg.high is None else cfg.high)
    p_lo, p_hi = torch.special.ndtr((lo - mean) / std), torch.special.ndtr((hi - mean) / std)
    params = OnDevice(p_lo, p_hi - p_lo, mean, std)

    def transform(u: torch.Tensor) -> torch.Tensor:
        p_low, p_span, mu, sigma = params.on(u.device)
        return mu + sigma * torch.special.ndtri(p_low + u * p_span)

    spec = TransformSpec.of(Kind.normal, *_per_component(cfg.shape, mean, std, p_lo, p_hi - p_lo))
    return transform, spec


def _choice(cfg: SamplerCfg) -> Built:
    """The index of the choice: records map it to the choice itself (``VariationBase.labels``)."""
    weights = _as_tensor([1.0] * len(cfg.choices) if cfg.weights is None else cfg.weights)
    cumulative = weights.cumsum(0) / weights.sum()
    cumulative[-1] = 1.0
    last = len(cumulative) - 1
    table = OnDevice(cumulative)

    def transform(u: torch.Tensor) -> torch.Tensor:
        (edges,) = table.on(u.device)
        # a batched draw's uniforms are a strided view; searchsorted would copy them anyway
        return torch.searchsorted(edges, u.contiguous(), right=True).clamp_max(last)

    numel = math.prod(cfg.shape)
    return transform, TransformSpec.of(Kind.choice, edges=cumulative.tolist(), numel=numel)


def _bernoulli(cfg: SamplerCfg) -> Built:
    p = _as_tensor(cfg.p)
    return (lambda u: u < cfg.p), TransformSpec.of(Kind.bernoulli, *_per_component(cfg.shape, p))


def _constant(cfg: SamplerCfg) -> Built:
    value = _as_tensor(cfg.value)
    on_device = OnDevice(value)
    spec = TransformSpec.of(Kind.constant, *_per_component(cfg.shape, value))
    return (lambda u: on_device.on(u.device)[0].expand(u.shape)), spec


_TRANSFORMS: dict[SamplerType, Callable[[SamplerCfg], Built]] = {
    SamplerType.uniform: _uniform,
    SamplerType.log_uniform: _log_uniform,
    SamplerType.normal: _normal,
    SamplerType.choice: _choice,
    SamplerType.bernoulli: _bernoulli,
    SamplerType.constant: _constant,
}


def build_sampler(cfg: SamplerCfg, key: str) -> SamplerBase:
    """The live sampler of a (validated) sampler config, drawing for variation ``key``."""
    cfg = cfg.checked(f"{key}.sampler")
    return _TransformSampler(key, cfg.shape, *_TRANSFORMS[cfg.type](cfg))
