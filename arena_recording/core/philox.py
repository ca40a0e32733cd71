"""Philox4x32-10: the counter-based generator behind every variation draw.

A draw's uniforms are a pure function of a 64-bit key (from the run seed and the variation key)
and a 128-bit counter (env id, episode in env, draw index, component), so the value an env gets
never depends on which other envs reset with it or which other variations are enabled. Philox
(Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC11; the generator behind
cuRAND and ``torch.rand`` on CUDA) has a 128-bit counter and a 64-bit key: distinct counters
never give the same block, so draws do not collide at the birthday rate of a 32-bit state.

One draw may hold several keys side by side (:func:`philox_uniforms_multi`: column ``c`` has
its own key and component index, read from per-column tables), so all the variations an env
draws at a reset cost one launch: on CUDA a draw is bound by its host launch cost, not by the
kernel.

Three implementations give bit-identical uniforms (tested against each other and against
Random123's known answers):

- CUDA: one hand-written Triton kernel per draw (32-bit ``tl.umulhi``, masked, so one compiled
  kernel serves every batch size, key set and component count), launched without any host
  synchronization.
- CUDA without Triton: int64 torch ops compiled into fused kernels (``torch.compile``, on
  first use). Every 32x32-bit product is split into partial products below 2**49, so no int64
  ever overflows on any backend.
- CPU: numpy uint64/uint32 arrays, whose wrap-around is defined; a small draw costs a few
  dozen numpy calls instead of a few hundred torch calls, and needs no compiler.

Uniforms are odd multiples of 2**-53 (52 random bits): exact in float64, never 0 or 1.

Example::

    key = derive_key(seed=7, key_hash=stable_hash("object.friction"))
    u = philox_uniforms(key, env_ids, episode_in_env, draw_index=0, numel=3)  # (n, 3) float64
    u = philox_uniforms_multi([key, other_key], [3, 1], env_ids, episode_in_env, 0)  # (n, 4)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from arena_recording.core.launch import Launcher

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

    It is computed on the device from Python constants: no host-to-device copy, which from
    pageable memory would synchronize the stream.
    """
    rounds = torch.arange(ROUNDS, dtype=torch.int64, device=device)
    k0, k1 = key & MASK32, key >> 32
    return torch.stack([(k0 + rounds * WEYL[0]) & MASK32, (k1 + rounds * WEYL[1]) & MASK32], 1)


class _Columns(NamedTuple):
    """What a draw needs to know of each of its columns, on one device."""

    table: torch.Tensor  # (2 * ROUNDS + 1, width) int64: round keys, then component indices
    keys: torch.Tensor  # (ROUNDS, 2, width) view of the table's round keys
    components: torch.Tensor  # (width,) view of its last row


@functools.lru_cache(maxsize=256)
def _columns(keys: tuple[int, ...], numels: tuple[int, ...], device: torch.device) -> _Columns:
    """Per-column round keys and component indices of a multi-key draw, built once per device.

    Tensors rather than Python ints, so that one compiled kernel serves every key set; built on
    the device from cached schedules (no host-to-device copy).
    """
    schedules = [
        round_keys(k, device).reshape(2 * ROUNDS, 1).expand(-1, m)
        for k, m in zip(keys, numels, strict=True)
    ]
    components = [torch.arange(m, dtype=torch.int64, device=device) for m in numels]
    table = torch.cat([torch.cat(schedules, 1), torch.cat(components).unsqueeze(0)])
    return _Columns(table, table[: 2 * ROUNDS].view(ROUNDS, 2, -1), table[2 * ROUNDS])


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

    ``keys`` is a ``(ROUNDS, 2, ...)`` schedule (:func:`round_keys`, or one per column) that
    broadcasts against the words; the four output words equal Random123's
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
    components: torch.Tensor,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor,
) -> torch.Tensor:
    """Uniforms of shape ``(len(env_ids), width)``; see :func:`philox_uniforms_multi`."""
    draw_index = draw_index & MASK32
    counter = (
        (env_ids & MASK32).unsqueeze(1),
        (episode_in_env & MASK32).unsqueeze(1),
        draw_index.unsqueeze(1) if draw_index.ndim else draw_index,
        components,
    )
    w0, w1, _, _ = philox4x32(counter, keys)
    odd = (w0 << 21) | (w1 >> 11) | 1  # 2k + 1 with k the top 52 bits of (w0, w1)
    return odd.to(torch.float64) * _SCALE


def _one_index_uniforms(
    keys: torch.Tensor,
    components: torch.Tensor,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor,
) -> torch.Tensor:
    """:func:`_torch_uniforms` with one draw index (0-d) for every env."""
    return _torch_uniforms(keys, components, env_ids, episode_in_env, draw_index)


@functools.cache
def _compiled(scalar_index: bool):
    """The compiled draw for one draw-index kind, built on first use (compiling imports Inductor).

    Two entry points, so that each has its own recompile limit for the size-0/1
    specializations of envs and columns.
    """
    fn = _one_index_uniforms if scalar_index else _torch_uniforms
    return torch.compile(fn, dynamic=True, fullgraph=True)


# --- Triton (CUDA) --------------------------------------------------------------------------

_BLOCK = 256
MAX_ELEMENTS = 2**31 - 1  # the kernel indexes in int32

if triton is not None:
    _M0, _M1 = tl.constexpr(MULTIPLIERS[0]), tl.constexpr(MULTIPLIERS[1])
    _ROUNDS = tl.constexpr(ROUNDS)
    _SCALE_TL = tl.constexpr(_SCALE)

    @triton.jit
    def uniforms_block(
        table_ptr,
        env_ptr,
        episode_ptr,
        draw_ptr,
        env_stride,
        episode_stride,
        draw_stride,
        row,
        col,
        width,
        mask,
        SCALAR_DRAW: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """The float64 uniforms of elements ``(row, col)``: column ``col`` reads its round keys
        and component index from column ``col`` of ``table`` (``_columns``)."""
        c0 = tl.load(env_ptr + row * env_stride, mask=mask, other=0).to(tl.uint32)
        c1 = tl.load(episode_ptr + row * episode_stride, mask=mask, other=0).to(tl.uint32)
        if SCALAR_DRAW:
            c2 = tl.full([BLOCK], 0, tl.uint32) + tl.load(draw_ptr).to(tl.uint32)
        else:
            c2 = tl.load(draw_ptr + row * draw_stride, mask=mask, other=0).to(tl.uint32)
        c3 = tl.load(table_ptr + 2 * _ROUNDS * width + col, mask=mask, other=0).to(tl.uint32)
        m0 = tl.full([BLOCK], _M0, tl.uint32)
        m1 = tl.full([BLOCK], _M1, tl.uint32)
        for r in tl.static_range(_ROUNDS):
            k0 = tl.load(table_ptr + 2 * r * width + col, mask=mask, other=0).to(tl.uint32)
            k1 = tl.load(table_ptr + (2 * r + 1) * width + col, mask=mask, other=0).to(tl.uint32)
            hi0, lo0 = tl.umulhi(m0, c0), m0 * c0
            hi1, lo1 = tl.umulhi(m1, c2), m1 * c2
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        odd = (c0.to(tl.uint64) << 21) | (c1 >> 11).to(tl.uint64) | 1
        return odd.to(tl.float64) * _SCALE_TL

    # Sizes and strides are runtime values and the index pointers may be unaligned slices, so
    # one compiled kernel serves every batch and key set (only a scalar draw index is a second
    # kernel).
    @triton.jit(
        do_not_specialize=["env_stride", "episode_stride", "draw_stride", "total", "width"],
        do_not_specialize_on_alignment=["env_ptr", "episode_ptr", "draw_ptr"],
    )
    def _philox_kernel(
        out_ptr,
        table_ptr,
        env_ptr,
        episode_ptr,
        draw_ptr,
        env_stride,
        episode_stride,
        draw_stride,
        total,
        width,
        SCALAR_DRAW: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < total
        u = uniforms_block(
            table_ptr, env_ptr, episode_ptr, draw_ptr, env_stride, episode_stride, draw_stride,
            offs // width, offs % width, width, mask, SCALAR_DRAW, BLOCK,
        )  # fmt: skip
        tl.store(out_ptr + offs, u, mask=mask)

    _launch_uniforms = Launcher(_philox_kernel)


def _int64_words(
    env_ids: torch.Tensor, episode_in_env: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Env ids and episodes as int64 on the env ids' device (no copy where they are so)."""
    if env_ids.dtype != torch.int64:
        env_ids = env_ids.to(torch.int64)
    if episode_in_env.dtype != torch.int64 or episode_in_env.device != env_ids.device:
        episode_in_env = episode_in_env.to(env_ids.device, torch.int64)
    return env_ids, episode_in_env


def device_counters(
    env_ids: torch.Tensor, episode_in_env: torch.Tensor, draw_index: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The counter words' tensors as a device kernel reads them: int64 on ``env_ids``' device,
    an int draw index as a cached 0-d tensor (no copy where they are so already)."""
    device, n = env_ids.device, env_ids.shape[0]
    env_ids, episode_in_env = _int64_words(env_ids, episode_in_env)
    if isinstance(draw_index, int):
        draw_index = _index_tensor(draw_index, device)
    elif draw_index.dtype != torch.int64 or draw_index.device != device:
        draw_index = draw_index.to(device, torch.int64)
    for name, words in (("episode_in_env", episode_in_env), ("draw_index", draw_index)):
        if words.shape not in ((n,), ()) or (name == "episode_in_env" and words.ndim == 0):
            raise ValueError(f"{name} of shape {tuple(words.shape)} for {n} env ids")
    return env_ids, episode_in_env, draw_index


def launch_counters(
    env_ids: torch.Tensor, episode_in_env: torch.Tensor, draw_index: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """A kernel's counter arguments, in order: the three pointers, then their strides
    (a scalar draw index has none: ``SCALAR_DRAW``)."""
    draw_stride = 0 if draw_index.ndim == 0 else draw_index.stride(0)
    return (
        env_ids,
        episode_in_env,
        draw_index,
        env_ids.stride(0),
        episode_in_env.stride(0),
        draw_stride,
    )


def _triton_uniforms(
    table: torch.Tensor,
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor,
) -> torch.Tensor:
    """:func:`_torch_uniforms` as one Triton kernel launch (Triton's interpreter runs it on CPU)."""
    n, width = env_ids.shape[0], table.shape[1]
    total = n * width
    if total > MAX_ELEMENTS:
        raise ValueError(f"a Triton draw holds at most {MAX_ELEMENTS} values, not {total}")
    out = torch.empty((n, width), dtype=torch.float64, device=env_ids.device)
    _launch_uniforms(
        triton.cdiv(total, _BLOCK),
        out,
        table,
        *launch_counters(env_ids, episode_in_env, draw_index),
        total,
        width,
        SCALAR_DRAW=draw_index.ndim == 0,
        BLOCK=_BLOCK,
    )
    return out


# --- numpy (CPU) ----------------------------------------------------------------------------

_MULTIPLIERS_NP = np.array(MULTIPLIERS, dtype=np.uint64).reshape(2, 1)
_LOW, _HIGH = (0, 1) if sys.byteorder == "little" else (1, 0)  # uint32 halves of a uint64


@functools.lru_cache(maxsize=256)
def _columns_numpy(keys: tuple[int, ...], numels: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Per-column round keys ``(ROUNDS, 2, width)`` and component indices ``(width,)``, uint32."""
    schedules = np.array([key_schedule(k) for k in keys], dtype=np.uint32)  # (keys, ROUNDS, 2)
    starts = np.cumsum(numels) - numels
    components = np.arange(sum(numels)) - np.repeat(starts, numels)
    column_keys = schedules[np.repeat(np.arange(len(keys)), numels)].transpose(1, 2, 0)
    return np.ascontiguousarray(column_keys), components.astype(np.uint32)


def philox4x32_numpy(counter: np.ndarray, round_keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of a ``(4, m)`` uint32 counter array; returns the four uint32 output words.

    ``round_keys`` is a ``(ROUNDS, 2, m)`` (or ``(ROUNDS, 2, 1)``) uint32 schedule. Words 0 and 2
    are multiplied as one ``(2, m)`` uint64 product whose uint32 halves are views, into two
    alternating buffers whose views are made once, so a round is three numpy calls that
    allocate nothing.
    """
    pair, other = counter[0::2], counter[1::2]  # (c0, c2), (c1, c3)
    products = np.empty((2, *pair.shape), dtype=np.uint64)
    halves = products.view(np.uint32)  # row i of a product: lo, hi, lo, hi, ...
    highs, lows = halves[:, ::-1, _HIGH::2], halves[:, ::-1, _LOW::2]  # (hi1, hi0), (lo1, lo0)
    words = np.empty(pair.shape, dtype=np.uint32)
    for r, round_key in enumerate(round_keys):
        np.multiply(pair, _MULTIPLIERS_NP, out=products[r & 1])
        pair = np.bitwise_xor(highs[r & 1], other, out=words)  # hi1 ^ c1, hi0 ^ c3
        pair ^= round_key
        other = lows[r & 1]
    return pair[0], other[0], pair[1], other[1]


def _numpy_uniforms(
    column_keys: np.ndarray,
    components: np.ndarray,
    env_ids: np.ndarray,
    episode_in_env: np.ndarray,
    draw_index: torch.Tensor | int,
) -> torch.Tensor:
    """Uniforms of shape ``(len(env_ids), width)``; see :func:`philox_uniforms_multi`."""
    n, width = env_ids.shape[0], components.shape[0]
    # Column-major (width, n), so that per-column values broadcast along contiguous rows; the
    # assignment casts take each word mod 2**32.
    counter = np.empty((4, width, n), dtype=np.uint32)
    counter[0] = env_ids
    counter[1] = episode_in_env
    counter[2] = np.asarray(draw_index)
    counter[3] = components[:, None]
    schedule = np.repeat(column_keys, n, axis=2)  # contiguous: ufuncs that broadcast cost more
    w0, w1, _, _ = philox4x32_numpy(counter.reshape(4, -1), schedule)
    out = np.empty((n, width))
    # (w0 << 21 | w1 >> 11 | 1) * 2**-53 as an exact float64 sum of its non-overlapping parts.
    u = np.multiply(w0.reshape(width, n), 2.0**-32, out=out.T)
    low = np.right_shift(w1, 11)
    low |= 1
    u += (low * _SCALE).reshape(width, n)
    return torch.from_numpy(out)


# --- entry points ---------------------------------------------------------------------------


def philox_uniforms_multi(
    keys: Sequence[int],
    numels: Sequence[int],
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor | int,
    *,
    backend: Backend | None = None,
) -> torch.Tensor:
    """Several keys' uniforms in one draw: float64 ``(len(env_ids), sum(numels))``.

    Column block ``f`` (``numels[f]`` columns from ``sum(numels[:f])``) is bit for bit
    ``philox_uniforms(keys[f], env_ids, episode_in_env, draw_index, numels[f])``, so an env's
    variations cost one launch per reset batch instead of one each (on CUDA a Triton draw is
    bound by its host launch cost). The per-column key and component tables are built once per
    (keys, numels, device) and cached.
    """
    keys, numels = tuple(keys), tuple(numels)
    if len(keys) != len(numels):
        raise ValueError(f"{len(keys)} keys but {len(numels)} numels")
    device = env_ids.device
    if backend is None:
        if device.type == "cpu":
            backend = "numpy"
        else:
            backend = "triton" if triton is not None and device.type == "cuda" else "compiled"
    n, width = env_ids.shape[0], sum(numels)
    if n * width == 0:
        return torch.empty((n, width), dtype=torch.float64, device=device)
    if backend == "numpy":
        env_ids, episode_in_env = _int64_words(env_ids, episode_in_env)
        column_keys, components = _columns_numpy(keys, numels)
        return _numpy_uniforms(
            column_keys, components, env_ids.numpy(), episode_in_env.numpy(), draw_index
        )
    env_ids, episode_in_env, draw_index = device_counters(env_ids, episode_in_env, draw_index)
    columns = _columns(keys, numels, device)
    if backend == "triton":
        return _triton_uniforms(columns.table, env_ids, episode_in_env, draw_index)
    fn = _compiled(draw_index.ndim == 0) if backend == "compiled" else _torch_uniforms
    return fn(columns.keys, columns.components, env_ids, episode_in_env, draw_index)


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
    host. The one-key case of :func:`philox_uniforms_multi`.
    """
    return philox_uniforms_multi(
        (key,), (numel,), env_ids, episode_in_env, draw_index, backend=backend
    )
