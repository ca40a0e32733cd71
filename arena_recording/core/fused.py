"""Fused draws: on CUDA, a batch's uniforms and every built-in sampler's transform in one
Triton kernel.

On a GPU a draw is bound by the host's launch cost, not by the kernel: drawing five factors
for a reset batch as uniforms plus each sampler's transform and cast took about twenty
launches. Here column ``c`` of a batch (one component of one sampler) carries its transform
as numbers (:class:`TransformSpec`: a kind, four parameters, the edges of a choice), so one
launch computes every value, written straight into three buffers (floating values in the
requested dtype, choice indices, Bernoulli flags) in which each sampler's values are one
contiguous ``(n, numel)`` block.

The arithmetic is the CPU transforms' (``arena_recording.core.sampling``) operation for
operation, rounded after each (no contraction into fused multiply-adds, except inside
``ndtri`` where torch's CUDA build contracts), so uniform, choice, Bernoulli and constant
values equal the per-sampler ops bit for bit; a normal or log-uniform value may differ from
them in the last float64 bit (``log`` and ``exp`` come from libdevice, compiled here without
contraction), as it may between CPU and CUDA.

Example::

    specs = [sampler.spec for sampler in samplers]
    keys = [derive_key(seed, sampler._key_hash) for sampler in samplers]
    values = draw(specs, keys, env_ids, episode_in_env, 0, torch.float32)  # one per sampler
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from arena_recording.core import philox
from arena_recording.core.launch import Launcher

triton = philox.triton
if triton is not None:
    import triton.language as tl

log = logging.getLogger(__name__)


class Kind(enum.IntEnum):
    """What a column's value is, from its uniform ``u`` and parameters ``a, b, c, d``."""

    affine = 0  # a + u * b
    exp_affine = 1  # exp(a + u * b)
    normal = 2  # a + b * ndtri(c + u * d)
    constant = 3  # a
    choice = 4  # the index of the first edge above u (an index column)
    bernoulli = 5  # u < a (a flag column)


@dataclass(frozen=True, eq=False)  # hashed by identity: a draw looks its plan up by its specs
class TransformSpec:
    """One sampler's transform as numbers: per component ``(a, b, c, d)``; a choice's edges.

    Example::

        TransformSpec.of(Kind.affine, [0.5], [1.5])  # uniform on [0.5, 2.0], one component
    """

    kind: Kind
    params: tuple[tuple[float, float, float, float], ...]
    edges: tuple[float, ...] = ()

    @classmethod
    def of(
        cls,
        kind: Kind,
        *columns: Sequence[float],
        edges: Sequence[float] = (),
        numel: int | None = None,
    ) -> TransformSpec:
        """A spec from per-component parameter lists (``a`` values, ``b`` values, ...);
        ``numel`` for a kind without parameters (a choice)."""
        count = len(columns[0]) if columns else numel
        padded = [*columns, *[[0.0] * count] * (4 - len(columns))]
        params = tuple(tuple(float(p) for p in row) for row in zip(*padded, strict=True))
        return cls(kind, params, tuple(edges))


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether draws on ``device`` in ``dtype`` are fused: CUDA with Triton, float32/64, and
    the kernel has not failed in this process."""
    return _failed is None and triton is not None and device.type == "cuda" and dtype in _FLOATS


_failed: str | None = None  # why the kernel could not run here (then draws are not fused)


_FLOATS = (torch.float32, torch.float64)
_BLOCK = 256
_TABLES = 3  # floating values, indices, flags


class _Plan(NamedTuple):
    """A batch's columns, on one device, built once per (specs, keys, device)."""

    keys: torch.Tensor  # philox round keys and component indices, (2 * ROUNDS + 1, width)
    # (6, width) int64: kind, first edge, edge count, and where the value goes: its sampler's
    # first column in its buffer, that sampler's numel, the component
    meta: torch.Tensor
    params: torch.Tensor  # (4, width) float64
    edges: torch.Tensor  # every choice's edges, concatenated (at least one number)
    widths: tuple[int, int, int]  # columns of the float, index and flag buffers (at least 1)
    max_edges: int
    blocks: tuple[tuple[int, int, int], ...]  # per spec: buffer, first column, numel


def _table(kind: Kind) -> int:
    return {Kind.choice: 1, Kind.bernoulli: 2}.get(kind, 0)


@functools.lru_cache(maxsize=256)
def _plan(specs: tuple[TransformSpec, ...], keys: tuple[int, ...], device: torch.device) -> _Plan:
    numels = [len(spec.params) for spec in specs]
    widths, blocks, meta, params, edges = [0] * _TABLES, [], [], [], []
    for spec, numel in zip(specs, numels, strict=True):
        table = _table(spec.kind)
        blocks.append((table, widths[table], numel))
        for component in range(numel):
            meta.append([spec.kind, len(edges), len(spec.edges), widths[table], numel, component])
        params += spec.params
        edges += spec.edges
        widths[table] += numel
    widths = [max(w, 1) for w in widths]  # an unused buffer still gets a (never read) column
    return _Plan(
        philox._columns(keys, tuple(numels), device).table,
        torch.tensor(meta, dtype=torch.int64).T.contiguous().to(device),
        torch.tensor(params, dtype=torch.float64).T.contiguous().to(device),
        torch.tensor(edges or [0.0], dtype=torch.float64).to(device),
        (widths[0], widths[1], widths[2]),
        max((len(spec.edges) for spec in specs), default=0),
        tuple(blocks),
    )


def draw(
    specs: Sequence[TransformSpec],
    keys: Sequence[int],
    env_ids: torch.Tensor,
    episode_in_env: torch.Tensor,
    draw_index: torch.Tensor | int,
    dtype: torch.dtype,
) -> list[torch.Tensor] | None:
    """Each spec's values for the batch, contiguous ``(n, numel)`` tensors: ``dtype`` for
    floating kinds, int64 indices for a choice, bool for a Bernoulli. One kernel launch, no
    host synchronization (the plan's tables are copied to the device once).

    ``None`` when the kernel cannot run here (it does not compile for this GPU or Triton):
    a warning says why, and every later draw of the process takes the per-sampler path
    (the same values, a normal or log-uniform float64 one up to its last bit)."""
    device = env_ids.device
    plan = _plan(tuple(specs), tuple(keys), device)
    n, width = env_ids.shape[0], plan.keys.shape[1]
    if n * max(width, *plan.widths) > philox.MAX_ELEMENTS:
        raise ValueError(f"a fused draw holds at most {philox.MAX_ELEMENTS} values per buffer")
    buffers = [
        torch.empty(n * w, dtype=t, device=device)
        for w, t in zip(plan.widths, (dtype, torch.int64, torch.bool), strict=True)
    ]
    counters = philox.device_counters(env_ids, episode_in_env, draw_index)
    if n * width:
        try:
            _launch(plan, buffers, counters, n, width)
        except Exception as error:  # noqa: BLE001 - a kernel that does not build or launch
            global _failed
            _failed = f"{type(error).__name__}: {error}"
            log.warning(
                "arena-recording: fused CUDA draws are off in this process (%s); draws take "
                "the per-sampler path, with the same values (normal and log-uniform float64 "
                "ones up to the last bit)",
                _failed,
            )
            return None
    return [buffers[b][first * n : (first + m) * n].view(n, m) for b, first, m in plan.blocks]


def _launch(
    plan: _Plan,
    buffers: list[torch.Tensor],
    counters: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    n: int,
    width: int,
) -> None:
    _launch_draw(
        triton.cdiv(n * width, _BLOCK),
        *buffers,
        plan.keys,
        plan.meta,
        plan.params,
        plan.edges,
        *philox.launch_counters(*counters),
        n,
        width,
        SCALAR_DRAW=counters[2].ndim == 0,
        MAX_EDGES=plan.max_edges,  # a kernel per longest choice: they are few and short
        BLOCK=_BLOCK,
    )


if triton is not None:
    _EXP_M2 = tl.constexpr(0.13533528323661269189)  # exp(-2)
    _S2PI = tl.constexpr(2.50662827463100050242)  # sqrt(2 pi)

    @triton.jit
    def _step(r, x, c: tl.constexpr):
        """``r * x + c`` in one rounding, ``c`` exact in float64 (a plain float argument would
        pass through float32)."""
        return tl.fma(r, x, tl.full(x.shape, c, tl.float64))

    @triton.jit
    def _horner(
        x,
        c0: tl.constexpr,
        c1: tl.constexpr,
        c2: tl.constexpr,
        c3: tl.constexpr,
        c4: tl.constexpr,
        c5: tl.constexpr,
        c6: tl.constexpr,
        c7: tl.constexpr,
        c8: tl.constexpr,
    ):
        """c0 x^8 + ... + c8 by Horner's rule with fused multiply-adds, as torch's CUDA
        ``polevl`` compiles."""
        r = _step(tl.full(x.shape, c0, tl.float64), x, c1)
        r = _step(r, x, c2)
        r = _step(r, x, c3)
        r = _step(r, x, c4)
        r = _step(r, x, c5)
        r = _step(r, x, c6)
        r = _step(r, x, c7)
        return _step(r, x, c8)

    @triton.jit
    def _ndtri(y0):
        """The inverse normal CDF: Cephes' ``ndtri`` (its coefficients), as torch computes it."""
        tail = y0 > 1.0 - _EXP_M2
        y = tl.where(tail, 1.0 - y0, y0)
        # |y - 0.5| <= 3/8: a rational function of (y - 0.5)^2
        h = y - 0.5
        h2 = h * h
        p0 = _horner(
            h2, 0.0, 0.0, 0.0, 0.0,
            -5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
            1.39312609387279679503e1, -1.23916583867381258016e0,
        )  # fmt: skip
        q0 = _horner(
            h2, 1.0, 1.95448858338141759834e0, 4.67627912898881538453e0,
            8.63602421390890590575e1, -2.25462687854119370527e2, 2.00260212380060660359e2,
            -8.20372256168333339912e1, 1.59056225126211695515e1, -1.18331621121330003142e0,
        )  # fmt: skip
        central = tl.fma(h, h2 * p0 / q0, h) * _S2PI
        # the tails: a rational function of 1 / sqrt(-2 log y)
        x = tl.sqrt(-2.0 * tl.log(y))
        x0 = x - tl.log(x) / x
        z = 1.0 / x
        p1 = _horner(
            z, 4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
            4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
            -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4,
        )  # fmt: skip
        q1 = _horner(
            z, 1.0, 1.57799883256466749731e1, 4.53907635128879210584e1,
            4.13172038254672030440e1, 1.50425385692907503408e1, 2.50464946208309415979e0,
            -1.42182922854787788574e-1, -3.80806407691578277194e-2, -9.33259480895457427372e-4,
        )  # fmt: skip
        p2 = _horner(
            z, 3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
            1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
            3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9,
        )  # fmt: skip
        q2 = _horner(
            z, 1.0, 6.02427039364742014255e0, 3.67983563856160859403e0,
            1.37702099489081330271e0, 2.16236993594496635890e-1, 1.34204006088543189037e-2,
            3.28014464682127739104e-4, 2.89247864745380683936e-6, 6.79019408009981274425e-9,
        )  # fmt: skip
        far = tl.where(x < 8.0, z * p1 / q1, z * p2 / q2)
        x = x0 - far
        x = tl.where(tail, x, -x)
        x = tl.where(y > _EXP_M2, central, x)
        x = tl.where(y0 == 0.0, float("-inf"), x)
        return tl.where(y0 == 1.0, float("inf"), x)

    @triton.jit(
        do_not_specialize=[
            "env_stride", "episode_stride", "draw_stride", "n", "width"
        ],
        do_not_specialize_on_alignment=["env_ptr", "episode_ptr", "draw_ptr"],
    )  # fmt: skip
    def _draw_kernel(
        float_ptr,
        index_ptr,
        flag_ptr,
        keys_ptr,
        meta_ptr,
        params_ptr,
        edges_ptr,
        env_ptr,
        episode_ptr,
        draw_ptr,
        env_stride,
        episode_stride,
        draw_stride,
        n,
        width,
        SCALAR_DRAW: tl.constexpr,
        MAX_EDGES: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n * width
        row = offs // width
        col = offs % width
        u = philox.uniforms_block(
            keys_ptr, env_ptr, episode_ptr, draw_ptr, env_stride, episode_stride, draw_stride,
            row, col, width, mask, SCALAR_DRAW, BLOCK,
        )  # fmt: skip
        kind = tl.load(meta_ptr + col, mask=mask, other=0)
        first = tl.load(meta_ptr + width + col, mask=mask, other=0)
        count = tl.load(meta_ptr + 2 * width + col, mask=mask, other=0)
        # (row, component) of its sampler's (n, numel) block, which starts at column ``start``
        start = tl.load(meta_ptr + 3 * width + col, mask=mask, other=0)
        numel = tl.load(meta_ptr + 4 * width + col, mask=mask, other=1)
        place = start * n + row * numel + tl.load(meta_ptr + 5 * width + col, mask=mask, other=0)
        a = tl.load(params_ptr + col, mask=mask, other=0.0)
        b = tl.load(params_ptr + width + col, mask=mask, other=0.0)
        c = tl.load(params_ptr + 2 * width + col, mask=mask, other=0.0)
        d = tl.load(params_ptr + 3 * width + col, mask=mask, other=0.0)
        linear = a + u * b
        value = tl.where(kind == 1, tl.exp(linear), linear)
        value = tl.where(kind == 2, a + b * _ndtri(c + u * d), value)
        value = tl.where(kind == 3, a, value)
        tl.store(float_ptr + place, value.to(float_ptr.dtype.element_ty), mask=mask & (kind <= 3))
        index = tl.zeros([BLOCK], dtype=tl.int64)
        for k in tl.static_range(MAX_EDGES):  # searchsorted(edges, u, right=True): edges <= u
            edge = tl.load(edges_ptr + first + k, mask=mask & (k < count), other=2.0)
            index += (edge <= u).to(tl.int64)
        index = tl.minimum(index, count - 1)
        tl.store(index_ptr + place, index, mask=mask & (kind == 4))
        tl.store(flag_ptr + place, u < a, mask=mask & (kind == 5))

    # the CPU transforms round after every operation: no contraction into fused multiply-adds
    _launch_draw = Launcher(_draw_kernel, enable_fp_fusion=False)
