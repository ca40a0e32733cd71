"""``EpisodeIdentity.advance`` numbers episodes alike on every path: numpy on the CPU, one Triton
kernel on CUDA (checked on any machine in Triton's interpreter, and on CUDA where there is
one), torch ops on a device without the kernel."""

from __future__ import annotations

import textwrap

import pytest
import torch
from conftest import run_in_triton_interpreter

from arena_recording.core import episodes
from arena_recording.core.episodes import EpisodeIdentity

SCRIPT = textwrap.dedent(
    """
    import torch
    from arena_recording.core import episodes
    from arena_recording.core.episodes import EpisodeIdentity

    def kernel_advance(identity, env_ids, started):  # the CUDA branch, run on the CPU
        identity.version += 1
        started = started.bool()
        episodes._launch_advance(
            1, identity.columns, identity._last_id, env_ids, started, env_ids.shape[0],
            env_ids.stride(0), started.stride(0), BLOCK=episodes._BLOCK,
        )

    g = torch.Generator().manual_seed(3)
    want, got = EpisodeIdentity(3000), EpisodeIdentity(3000)
    for size in (3000, 1, 41, 2500, 700, 3000, 0):  # whole blocks, parts, several blocks
        env_ids = torch.randperm(3000, generator=g)[:size]
        started = torch.rand(size, generator=g) < 0.8
        ids = torch.stack([env_ids, env_ids], 1).to(torch.int32)[:, 0]  # strided, int32
        want.advance(env_ids, started)
        kernel_advance(got, ids, started)
        assert torch.equal(got.columns, want.columns), size
        assert got._last_id.item() == want._last_id.item(), size
    print("same identities", int(want._last_id))
    """
)


def test_numpy_and_torch_advances_number_episodes_alike():
    g = torch.Generator().manual_seed(4)
    numpy_path, torch_path = EpisodeIdentity(300), EpisodeIdentity(300)
    for size in (300, 7, 1, 150, 0, 300):
        env_ids = torch.randperm(300, generator=g)[:size]
        started = torch.rand(size, generator=g) < 0.6
        numpy_path.advance(env_ids.to(torch.int32), started)  # the CPU path
        if size:  # (``advance`` returns before any path for an empty batch)
            torch_path._advance_torch(env_ids, started)  # a device's path without the kernel
        assert torch.equal(numpy_path.columns, torch_path.columns), size
        assert numpy_path._last_id.item() == torch_path._last_id.item(), size
    assert numpy_path.episode_in_env.sum() > 300  # most envs moved on, some several times


@pytest.mark.skipif(episodes.triton is None, reason="needs Triton")
def test_the_advance_kernel_numbers_episodes_as_the_torch_ops_in_tritons_interpreter():
    assert "same identities" in run_in_triton_interpreter(SCRIPT)


@pytest.mark.skipif(
    not torch.cuda.is_available() or episodes.triton is None, reason="needs CUDA and Triton"
)
def test_cuda_advance_is_the_cpu_advance_without_host_synchronization():
    g = torch.Generator().manual_seed(5)
    cpu, cuda = EpisodeIdentity(5000), EpisodeIdentity(5000, "cuda")
    batches = []
    for size in (5000, 50, 1, 3000, 1200, 0, 5000):
        env_ids = torch.randperm(5000, generator=g)[:size]
        batches.append((env_ids, torch.rand(size, generator=g) < 0.7))
    cuda.advance(batches[0][0].cuda(), batches[0][1].cuda())  # compiles
    cpu.advance(*batches[0])
    on_device = [(ids.cuda().to(torch.int32), started.cuda()) for ids, started in batches[1:]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for ids, started in on_device:
            cuda.advance(ids, started)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for ids, started in batches[1:]:
        cpu.advance(ids, started)
    assert torch.equal(cuda.columns.cpu(), cpu.columns)
    assert cuda._last_id.item() == cpu._last_id.item()


@pytest.mark.skipif(episodes.triton is None, reason="needs Triton")
def test_an_advance_kernel_that_cannot_run_leaves_numbering_to_the_torch_ops(monkeypatch, caplog):
    def no_kernel(*args, **kwargs):
        raise RuntimeError("PTX .version 9.9 does not support .target sm_120")

    monkeypatch.setattr(episodes, "_launch_advance", no_kernel)
    monkeypatch.setattr(episodes, "_failed", None)
    identity = EpisodeIdentity(4)
    ids, started = torch.tensor([1, 3]), torch.tensor([True, True])
    with caplog.at_level("WARNING"):
        assert not episodes._kernel_advance(identity, ids, started)
    assert "episode numbering takes torch ops (RuntimeError: PTX" in caplog.text
    assert identity.columns.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]  # untouched
    caplog.clear()
    assert not episodes._kernel_advance(identity, ids, started)
    assert caplog.text == ""  # said once: later advances do not try the kernel again
