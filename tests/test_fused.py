"""The fused CUDA draw (uniforms and transforms in one Triton kernel) computes what the
per-sampler transforms compute: checked on any machine in Triton's interpreter, which runs the
kernel's arithmetic on the CPU, and on CUDA where there is one."""

from __future__ import annotations

import textwrap

import pytest
import torch
from conftest import run_in_triton_interpreter

from arena_recording.core import fused, philox

SCRIPT = textwrap.dedent(
    """
    import torch
    from arena_recording.core import fused
    from arena_recording.core.config import (
        BernoulliCfg, ChoiceCfg, ConstantCfg, LogUniformCfg, NormalCfg, UniformCfg,
    )
    from arena_recording.core.sampling import batch_draw, build_sampler

    SAMPLERS = {
        "scalar": UniformCfg(low=0.5, high=2.0),
        "vector": UniformCfg(low=[0.0, -1.0, 5.0], high=[1.0, 1.0, 6.0]),
        "normal": NormalCfg(mean=[1.0, 0.0], std=[0.5, 2.0], low=[0.2, -1.0], high=[3.0, 1.0]),
        "wide": NormalCfg(mean=0.0, std=1.0),
        "log": LogUniformCfg(low=0.01, high=10.0),
        "choice": ChoiceCfg(choices=[0.1, "red", 3], weights=[0.2, 0.5, 0.3]),
        "five": ChoiceCfg(choices=[1, 2, 3, 4, 5]),
        "flag": BernoulliCfg(p=0.3),
        "const": ConstantCfg(value=[1.5, 2.5]),
    }
    samplers = [build_sampler(cfg, key) for key, cfg in SAMPLERS.items()]
    g = torch.Generator().manual_seed(0)
    env = torch.randint(-1, 70_000, (1_200,), generator=g)
    episode = torch.randint(-1, 10**6, (1_200,), generator=g)
    steps = torch.randint(0, 500, (1_200,), generator=g)
    ids = (env[::2], episode[1:601])  # strided, and an unaligned slice
    checked = 0
    unfused = fused.available
    for subset in (samplers, samplers[:2], [samplers[7]], samplers[3:6]):
        for dtype in (torch.float64, torch.float32):
            for draw in (0, steps[:600]):
                kw = {"seed": 11, "episode_in_env": ids[1], "draw_index": draw, "dtype": dtype}
                want = batch_draw(subset, ids[0], **kw)
                fused.available = lambda device, dtype: True  # the kernel, on the CPU
                got = batch_draw(subset, ids[0], **kw)
                none = {"episode_in_env": episode[:0], "draw_index": draw if isinstance(draw, int) else draw[:0]}
                empty = batch_draw(subset, env[:0], **{**kw, **none})
                fused.available = unfused
                for s, g_, w in zip(subset, got, want):
                    assert g_.dtype == w.dtype and g_.shape == w.shape, (s.key, g_, w)
                    assert g_.is_contiguous(), s.key
                    exact = dtype == torch.float32 or s.spec.kind != fused.Kind.normal
                    # float64 normals: the interpreter rounds each of the inverse CDF's fused
                    # multiply-adds twice, a few ulps in all
                    ok = torch.equal(g_, w) if exact else torch.allclose(g_, w, rtol=4e-15, atol=0)
                    assert ok, (s.key, dtype, (g_ - w).abs().max())
                    checked += g_.numel()
                assert [e.shape for e in empty] == [(0, *s.shape) for s in subset]
    print("same values", checked)
    """
)


@pytest.mark.skipif(philox.triton is None, reason="needs Triton")
def test_fused_kernel_computes_the_transforms_in_tritons_interpreter():
    assert "same values" in run_in_triton_interpreter(SCRIPT)


def test_fused_draws_only_on_cuda_in_float32_or_float64():
    assert not fused.available(torch.device("cpu"), torch.float32)
    cuda = torch.device("cuda", 0)
    assert fused.available(cuda, torch.float32) == (philox.triton is not None)
    assert not fused.available(cuda, torch.float16)


def test_a_kernel_that_cannot_run_turns_fused_draws_off_with_a_warning(monkeypatch, caplog):
    """Where the kernel fails (a GPU or Triton it does not compile for), draws go on unfused
    with the same values, and the warning says why. Shown on the CPU: the launch is made to
    fail the way a compile error would."""
    from arena_recording.core.config import NormalCfg, UniformCfg
    from arena_recording.core.sampling import batch_draw, build_sampler

    samplers = [build_sampler(UniformCfg(low=0.5, high=2.0), "m"), build_sampler(NormalCfg(), "f")]
    env_ids, episodes = torch.arange(5), torch.arange(5) % 2
    expected = batch_draw(samplers, env_ids, seed=3, episode_in_env=episodes)

    def no_kernel(*args, **kwargs):
        raise RuntimeError("PTX .version 9.9 does not support .target sm_200")

    monkeypatch.setattr(fused, "available", lambda device, dtype: fused._failed is None)
    monkeypatch.setattr(fused, "_launch", no_kernel)
    monkeypatch.setattr(fused, "_failed", None)
    with caplog.at_level("WARNING"):
        got = batch_draw(samplers, env_ids, seed=3, episode_in_env=episodes)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    assert "fused CUDA draws are off in this process (RuntimeError: PTX" in caplog.text
    assert fused._failed is not None
    caplog.clear()
    batch_draw(samplers, env_ids, seed=3, episode_in_env=episodes)
    assert caplog.text == ""  # said once: later draws do not try the kernel again


@pytest.mark.skipif(
    not torch.cuda.is_available() or philox.triton is None, reason="needs CUDA and Triton"
)
def test_cuda_draws_are_one_launch_with_the_cpu_values_and_no_host_synchronization(monkeypatch):
    from arena_recording.core.config import (
        BernoulliCfg,
        ChoiceCfg,
        LogUniformCfg,
        NormalCfg,
        UniformCfg,
    )
    from arena_recording.core.sampling import batch_draw, build_sampler

    cfgs = {
        "mass": UniformCfg(low=0.5, high=2.0),
        "pos": UniformCfg(low=[-0.1, -0.1, 0.0], high=[0.1, 0.1, 0.05]),
        "friction": NormalCfg(mean=0.6, std=0.15, low=0.2, high=1.0),
        "scale": LogUniformCfg(low=0.01, high=10.0),
        "texture": ChoiceCfg(choices=["wood", "metal", "plastic"]),
        "light": BernoulliCfg(p=0.8),
    }
    samplers = [build_sampler(cfg, key) for key, cfg in cfgs.items()]
    env_ids, episodes = torch.arange(0, 60_000, 7), torch.arange(8_572) % 13
    on_cpu = batch_draw(samplers, env_ids, seed=5, episode_in_env=episodes)
    ids, eps = env_ids.cuda(), episodes.cuda()
    batch_draw(samplers, ids, seed=5, episode_in_env=eps)  # compiles
    launches = []
    launch = fused._launch
    monkeypatch.setattr(fused, "_launch", lambda *a: launches.append(1) or launch(*a))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu = batch_draw(samplers, ids, seed=5, episode_in_env=eps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert launches == [1] and fused._failed is None
    for sampler, cpu, gpu in zip(samplers, on_cpu, on_gpu, strict=True):
        assert torch.equal(gpu.cpu(), cpu), sampler.key
    # float64: the per-sampler ops on the GPU give the same bits, a normal or log-uniform
    # value up to its last bit (libdevice's log and exp, compiled with other contraction)
    kw = {"seed": 5, "episode_in_env": eps, "dtype": torch.float64}
    fused_values = batch_draw(samplers, ids, **kw)
    monkeypatch.setattr(fused, "available", lambda device, dtype: False)
    for sampler, f, u in zip(samplers, fused_values, batch_draw(samplers, ids, **kw), strict=True):
        if sampler.spec.kind in (fused.Kind.normal, fused.Kind.exp_affine):
            assert torch.allclose(f, u, rtol=2.3e-16, atol=0), sampler.key
        else:
            assert torch.equal(f, u), sampler.key


@pytest.mark.skipif(
    not torch.cuda.is_available() or philox.triton is None, reason="needs CUDA and Triton"
)
def test_later_launches_call_the_compiled_kernel_per_specialization(monkeypatch):
    from arena_recording.core.config import NormalCfg
    from arena_recording.core.sampling import batch_draw, build_sampler

    samplers = [build_sampler(NormalCfg(mean=0.6, std=0.15, low=0.2, high=1.0), "friction")]
    launcher = fused._launch_draw
    launcher._compiled.clear()
    through_triton = []
    run = fused._draw_kernel.run
    monkeypatch.setattr(
        fused._draw_kernel, "run", lambda *a, **kw: through_triton.append(1) or run(*a, **kw)
    )
    env_ids, episodes = torch.arange(3, 900, 5), torch.arange(180) % 4
    for dtype in (torch.float32, torch.float64, torch.float32, torch.float64):
        for start in (0, 1):  # from 1: the ids start 8 bytes into their storage
            ids, eps = env_ids[start:], episodes[start:]
            on_cpu = batch_draw(samplers, ids, seed=9, episode_in_env=eps, dtype=dtype)[0]
            kw = {"seed": 9, "episode_in_env": episodes.cuda()[start:], "dtype": dtype}
            on_gpu = batch_draw(samplers, env_ids.cuda()[start:], **kw)[0]
            assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=2.3e-16, atol=0), (dtype, start)
    # Triton's own launch once per (dtype, alignment of the ids): the first compiles, later
    # launches call the compiled kernel
    assert len(through_triton) == len(launcher._compiled) == 4 and fused._failed is None
