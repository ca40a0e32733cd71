"""Philox4x32-10: the counter-based generator behind every variation draw.

A draw's uniforms are a pure function of a 64-bit key (from the run seed and the variation key)
and a 128-bit counter (env id, episode in env, draw index, component), so the value an env gets
never depends on which other envs reset with it or which other variations are enabled. Philox
(Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC11; the generator behind
cuRAND and ``torch.rand`` on CUDA) has a 128-bit counter and a 64-bit key: distinct counters
never give the same block, so draws do not collide at the birthday rate of a 32-bit state.

Three implementations give bit-identical uniforms (tested against each other and against
Random123's known answers):

- CUDA: one hand-written Triton kernel per draw (32-bit ``tl.umulhi``, masked, so one compiled
  kernel serves every batch size and component count), launched without any host
  synchronization; about the cost of a ``torch.rand`` launch.
- CUDA without Triton: int64 torch ops compiled into fused kernels (``torch.compile``; two per
  draw, compiled on first use). Every 32x32-bit product is split into partial products below
  2**49, so no int64 ever overflows on any backend.
- CPU: numpy uint64/uint32 arrays, whose wrap-around is defined; a small draw costs a few
  dozen numpy calls instead of a few hundred torch calls, and needs no compiler.

Uniforms are odd multiples of 2**-53 (52 random bits): exact in float64, never 0 or 1.

Example::

    key = derive_key(seed=7, key_hash=stable_hash("object.friction"))
    u = philox_uniforms(key, env_ids, episode_in_env, draw_index=0, numel=3)  # (n, 3) float64
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Literal

import numpy as np
import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CUDA draws then go through torch.compile
    triton = None

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
ROUNDS = 10
MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
WEYL = (0x9E3779B9, 0xBB67AE85)
_GOLDEN64 = 0x9E3779B97F4A7C15
_SCALE = 2.0**-53

Counter = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Backend = Literal["numpy", "eager", "compiled", "triton"]


def _splitmix64(x: int) -> int:
    """Avalanche a 64-bit integer (the SplitMix64 finalizer)."""
    x = (x + _GOLDEN64) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=1024)
def derive_key(seed: int, key_hash: int) -> int:
    """The 64-bit Philox key of one variation in one run (seed and key hash taken mod 2**64).

    >>> derive_key(7, 1) != derive_key(7, 2) != derive_key(8, 1)
    True
    """
    return _splitmix64(_splitmix64(seed & MASK64) ^ (key_hash & MASK64))


def key_schedule(key: int) -> list[tuple[int, int]]:
    """The ``ROUNDS`` round keys of a 64-bit key (Philox bumps both halves by Weyl constants)."""
    k0, k1 = key & MASK32, key >> 32
    return [((k0 + r * WEYL[0]) & MASK32, (k1 + r * WEYL[1]) & MASK32) for r in range(ROUNDS)]


# --- torch (CUDA) ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def round_keys(key: int, device: torch.device) -> torch.Tensor:
    """The key schedule as a ``(ROUNDS, 2)`` int64 tensor, built once per key and device.

    A tensor rather than Python ints, so that a compiled draw is traced once for every key. It
    is computed on the device from Python constants: no host-to-device copy, which from pageable
    memory would synchronize the stream.
    """
    rounds = torch.arange(ROUNDS, dtype=torch.int64, device=device)
    k0, k1 = key & MASK32, key >> 32
    return torch.stack([(k0 + rounds * WEYL[0]) & MASK32, (k1 + rounds * WEYL[1]) & MASK32], 1)


@functools.lru_cache(maxsize=1024)
def _index_tensor(draw_index: int, device: torch.device) -> torch.Tensor:
    """A 0-d int64 tensor of ``draw_index`` on ``device``, filled there (no copy), built once."""
    return torch.full((), draw_index, dtype=torch.int64, device=device)


def _mulhilo(multiplier: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``multiplier * x`` for 32-bit ``x`` held in int64.

    The full product needs 64 unsigned bits; splitting the multiplier into 16-bit halves keeps
    every partial product below 2**49, so int64 never overflows.
    """
    upper = x * (multiplier >> 16)  # weight 2**16
    low = x * (multiplier & 0xFFFF) + ((upper & 0xFFFF) << 16)
    return (upper >> 16) + (low >> 32), low & MASK32


def philox4x32(counter: Counter, keys: torch.Tensor) -> Counter:
    """Philox4x32-10 of broadcastable int64 counter words in ``[0, 2**32)``.

    ``keys`` is the schedule from :func:`round_keys`; the four output words equal Random123's
    ``philox4x32(ctr, key)``, as int64 in ``[0, 2**32)``.
    """
    c0, c1, c2, c3 = counter
    for r in range(ROUNDS):
        hi0, lo0 = _mulhilo(MULTIPLIERS[0], c0)
        hi1, lo1 = _mulhilo(MULTIPLIERS[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ keys[r, 0], lo1, hi0 ^ c3 ^ keys[r, 1], lo0
    return c0, c1, c2, c3


def _torch_uniforms(
    keys: torch.Tensor,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor,
    numel: int,
) -> torch.Tensor:
    """Uniforms of shape ``(len(env_ids), numel)``; see :func:`philox_uniforms`."""
    draw_index = draw_index & MASK32
    counter = (
        (env_ids & MASK32).unsqueeze(1),
        (episode_in_env & MASK32).unsqueeze(1),
        draw_index.unsqueeze(1) if draw_index.ndim else draw_index,
        torch.arange(numel, device=env_ids.device, dtype=torch.int64),
    )
    w0, w1, _, _ = philox4x32(counter, keys)
    odd = (w0 << 21) | (w1 >> 11) | 1  # 2k + 1 with k the top 52 bits of (w0, w1)
    return odd.to(torch.float64) * _SCALE


def _one_index_uniforms(
    keys: torch.Tensor,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor,
    numel: int,
) -> torch.Tensor:
    """:func:`_torch_uniforms` with one draw index (0-d) for every env."""
    return _torch_uniforms(keys, env_ids, episode_in_env, draw_index, numel)


@functools.cache
def _compiled(scalar_index: bool):
    """The compiled draw for one draw-index kind, built on first use (compiling imports Inductor).

    Two entry points, so that each has its own recompile limit for the size-0/1
    specializations of envs and components.
    """
    fn = _one_index_uniforms if scalar_index else _torch_uniforms
    return torch.compile(fn, dynamic=True, fullgraph=True)


# --- Triton (CUDA) --------------------------------------------------------------------------

_BLOCK = 256
_MAX_ELEMENTS = 2**31 - 1  # the kernel indexes in int32

if triton is not None:
    _M0, _M1 = tl.constexpr(MULTIPLIERS[0]), tl.constexpr(MULTIPLIERS[1])
    _ROUNDS = tl.constexpr(ROUNDS)
    _SCALE_TL = tl.constexpr(_SCALE)

    # Sizes and strides are runtime values and the index pointers may be unaligned slices, so
    # one compiled kernel serves every batch (only a scalar draw index is a second kernel).
    @triton.jit(
        do_not_specialize=["env_stride", "episode_stride", "draw_stride", "total", "numel"],
        do_not_specialize_on_alignment=["env_ptr", "episode_ptr", "draw_ptr"],
    )
    def _philox_kernel(
        out_ptr,
        keys_ptr,
        env_ptr,
        episode_ptr,
        draw_ptr,
        env_stride,
        episode_stride,
        draw_stride,
        total,
        numel,
        SCALAR_DRAW: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < total
        row = offs // numel
        c0 = tl.load(env_ptr + row * env_stride, mask=mask, other=0).to(tl.uint32)
        c1 = tl.load(episode_ptr + row * episode_stride, mask=mask, other=0).to(tl.uint32)
        if SCALAR_DRAW:
            c2 = tl.full([BLOCK], 0, tl.uint32) + tl.load(draw_ptr).to(tl.uint32)
        else:
            c2 = tl.load(draw_ptr + row * draw_stride, mask=mask, other=0).to(tl.uint32)
        c3 = (offs % numel).to(tl.uint32)
        m0 = tl.full([BLOCK], _M0, tl.uint32)
        m1 = tl.full([BLOCK], _M1, tl.uint32)
        for r in tl.static_range(_ROUNDS):
            k0 = tl.load(keys_ptr + 2 * r).to(tl.uint32)
            k1 = tl.load(keys_ptr + 2 * r + 1).to(tl.uint32)
            hi0, lo0 = tl.umulhi(m0, c0), m0 * c0
            hi1, lo1 = tl.umulhi(m1, c2), m1 * c2
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        odd = (c0.to(tl.uint64) << 21) | (c1 >> 11).to(tl.uint64) | 1
        tl.store(out_ptr + offs, odd.to(tl.float64) * _SCALE_TL, mask=mask)


def _triton_uniforms(
    key: int,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor,
    numel: int,
) -> torch.Tensor:
    """:func:`_torch_uniforms` as one Triton kernel launch (Triton's interpreter runs it on CPU)."""
    n = env_ids.shape[0]
    total = n * numel
    if total > _MAX_ELEMENTS:
        raise ValueError(f"a Triton draw holds at most {_MAX_ELEMENTS} values, not {total}")
    device = env_ids.device
    out = torch.empty((n, numel), dtype=torch.float64, device=device)
    draw_stride = draw_index.stride(0) if draw_index.ndim else 0
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        _philox_kernel[(triton.cdiv(total, _BLOCK),)](
            out,
            round_keys(key, device),
            env_ids,
            episode_in_env,
            draw_index,
            env_ids.stride(0),
            episode_in_env.stride(0),
            draw_stride,
            total,
            numel,
            SCALAR_DRAW=draw_index.ndim == 0,
            BLOCK=_BLOCK,
        )
    return out


# --- numpy (CPU) ----------------------------------------------------------------------------

_MULTIPLIERS_NP = np.array(MULTIPLIERS, dtype=np.uint64).reshape(2, 1)
_LOW, _HIGH = (0, 1) if sys.byteorder == "little" else (1, 0)  # uint32 halves of a uint64


@functools.lru_cache(maxsize=1024)
def _round_keys_np(key: int) -> tuple[np.ndarray, ...]:
    return tuple(np.array(k, dtype=np.uint32).reshape(2, 1) for k in key_schedule(key))


def philox4x32_numpy(counter: np.ndarray, key: int) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of a ``(4, m)`` uint32 counter array; returns the four uint32 output words.

    Words 0 and 2 are multiplied as one ``(2, m)`` uint64 product whose uint32 halves are views,
    so a round is three numpy calls.
    """
    pair, other = counter[0::2], counter[1::2]  # (c0, c2), (c1, c3)
    for round_key in _round_keys_np(key):
        halves = (pair * _MULTIPLIERS_NP).view(np.uint32)  # row i: lo, hi, lo, hi, ...
        pair = np.bitwise_xor(halves[::-1, _HIGH::2], other)  # hi1 ^ c1, hi0 ^ c3
        pair ^= round_key
        other = halves[::-1, _LOW::2]  # lo1, lo0
    return pair[0], other[0], pair[1], other[1]


def _numpy_uniforms(
    key: int,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor | int,
    numel: int,
) -> torch.Tensor:
    n = env_ids.shape[0]
    counter = np.empty((4, n, numel), dtype=np.uint32)
    counter[0] = (env_ids.numpy() & MASK32)[:, None]
    counter[1] = (episode_in_env.numpy() & MASK32)[:, None]
    draw = np.asarray(draw_index, dtype=np.int64) & MASK32
    counter[2] = draw[:, None] if draw.ndim else draw
    counter[3] = np.arange(numel, dtype=np.uint32)
    w0, w1, _, _ = philox4x32_numpy(counter.reshape(4, -1), key)
    odd = (w0.astype(np.uint64) << 21) | (w1 >> 11) | 1
    return torch.from_numpy((odd.astype(np.float64) * _SCALE).reshape(n, numel))


# --- entry point ----------------------------------------------------------------------------


def philox_uniforms(
    key: int,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor | int,
    numel: int,
    *,
    backend: Backend | None = None,
) -> torch.Tensor:
    """Uniforms in (0, 1), float64, shape ``(len(env_ids), numel)``, on ``env_ids``' device.

    Element ``[i, j]`` comes from Philox4x32-10 under ``key`` of the counter ``(env_ids[i],
    episode_in_env[i], draw_index (or draw_index[i]), j)``, each word taken mod 2**32 (so the
    build-time env and episode ``-1`` are ``2**32 - 1``). ``backend`` defaults to ``"numpy"`` on
    CPU, ``"triton"`` (one kernel) on CUDA where Triton is installed, else ``"compiled"`` (fused
    kernels); every backend gives the same bits. Nothing here reads a device value back to the
    host.
    """
    device = env_ids.device
    if backend is None:
        if device.type == "cpu":
            backend = "numpy"
        else:
            backend = "triton" if triton is not None and device.type == "cuda" else "compiled"
    env_ids = env_ids.to(torch.int64)
    episode_in_env = torch.as_tensor(episode_in_env, device=device).to(torch.int64)
    if env_ids.shape[0] * numel == 0:
        return torch.empty((env_ids.shape[0], numel), dtype=torch.float64, device=device)
    if backend == "numpy":
        return _numpy_uniforms(key, env_ids, episode_in_env, draw_index, numel)
    if isinstance(draw_index, int):
        draw_index = _index_tensor(draw_index, device)
    draw_index = draw_index.to(device, torch.int64)
    if backend == "triton":
        return _triton_uniforms(key, env_ids, episode_in_env, draw_index, numel)
    fn = _compiled(draw_index.ndim == 0) if backend == "compiled" else _torch_uniforms
    return fn(round_keys(key, device), env_ids, episode_in_env, draw_index, numel)
