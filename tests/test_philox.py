"""Philox4x32-10 draws: known answers, counter semantics, determinism, quality, backends agree."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from conftest import run_in_triton_interpreter

from arena_recording.core import philox
from arena_recording.core.philox import (
    derive_key,
    key_schedule,
    philox4x32,
    philox4x32_numpy,
    philox_uniforms,
    philox_uniforms_multi,
    round_keys,
)
from arena_recording.core.sampling import counter_uniforms, stable_hash

# Random123's known-answer vectors for philox4x32_R(10, ctr, key) (its tests/kat_vectors).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CUDA_BACKENDS = ["eager", "compiled"] + (["triton"] if philox.triton is not None else [])
needs_triton_on_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or philox.triton is None, reason="needs CUDA and Triton"
)
KEY = derive_key(seed=7, key_hash=stable_hash("object.mass"))


def _key(words: tuple[int, int]) -> int:
    return words[0] | words[1] << 32


def _schedule(key: int) -> np.ndarray:
    """``key``'s round keys as the ``(ROUNDS, 2, 1)`` array :func:`philox4x32_numpy` takes."""
    return np.array(key_schedule(key), dtype=np.uint32)[..., None]


def _reference(key: int, env: int, episode: int, draw: int, component: int) -> float:
    """One uniform straight from the numpy rounds."""
    words = [w & philox.MASK32 for w in (env, episode, draw, component)]
    counter = np.array(words, dtype=np.uint32)[:, None]
    w0, w1, _, _ = (int(w[0]) for w in philox4x32_numpy(counter, _schedule(key)))
    return (w0 << 21 | w1 >> 11 | 1) / 2**53


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_numpy_rounds_give_random123_known_answers(counter, key, expected):
    out = philox4x32_numpy(np.array(counter, dtype=np.uint32).reshape(4, 1), _schedule(_key(key)))
    assert [int(word[0]) for word in out] == list(expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_torch_rounds_give_random123_known_answers(counter, key, expected, device):
    words = tuple(torch.tensor([c], device=device) for c in counter)
    out = philox4x32(words, round_keys(_key(key), torch.device(device)))
    assert [int(word[0]) for word in out] == list(expected)


def test_element_is_philox_of_env_episode_draw_component():
    env_ids, episodes = torch.tensor([3, -1]), torch.tensor([5, -1])
    u = philox_uniforms(KEY, env_ids, episodes, draw_index=2, numel=3)
    for i, (env, episode) in enumerate([(3, 5), (-1, -1)]):
        for j in range(3):
            assert u[i, j].item() == _reference(KEY, env, episode, 2, j)


def test_key_mixes_seed_and_64_bit_key_hash():
    assert stable_hash("object.mass") == stable_hash("object.mass") >= 2**32
    keys = {derive_key(seed, stable_hash(k)) for seed in range(100) for k in ("a", "b", "c")}
    assert len(keys) == 300
    assert derive_key(2**64 + 3, 9) == derive_key(3, 9)


def test_values_do_not_depend_on_batch_order_or_membership():
    env_ids = torch.arange(64)
    episodes = torch.arange(64) * 7 % 5
    draw_index = torch.arange(64) % 3
    together = philox_uniforms(KEY, env_ids, episodes, draw_index, 4)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = philox_uniforms(KEY, env_ids[order], episodes[order], draw_index[order], 4)
    assert torch.equal(shuffled, together[order])
    one = philox_uniforms(KEY, env_ids[9:10], episodes[9:10], int(draw_index[9]), 4)
    assert torch.equal(one, together[9:10])
    fewer_components = philox_uniforms(KEY, env_ids, episodes, draw_index, 2)
    assert torch.equal(fewer_components, together[:, :2])


def test_every_counter_word_and_the_key_change_the_values():
    env_ids, episodes = torch.arange(8), torch.zeros(8, dtype=torch.int64)
    base = philox_uniforms(KEY, env_ids, episodes, 0, 2)
    changed = [
        philox_uniforms(KEY, env_ids + 8, episodes, 0, 2),
        philox_uniforms(KEY, env_ids, episodes + 1, 0, 2),
        philox_uniforms(KEY, env_ids, episodes, 1, 2),
        philox_uniforms(derive_key(8, stable_hash("object.mass")), env_ids, episodes, 0, 2),
        philox_uniforms(derive_key(7, stable_hash("object.size")), env_ids, episodes, 0, 2),
    ]
    for other in changed:
        assert not torch.isin(other, base).any()
    assert base[:, 0].ne(base[:, 1]).all()


def test_no_whole_draw_collides_among_two_million_env_episode_pairs():
    envs, episodes = 2_000, 1_000
    env_ids = torch.arange(envs).repeat_interleave(episodes)
    episode_in_env = torch.arange(episodes).repeat(envs)
    u = counter_uniforms(0, stable_hash("object.pose"), env_ids, episode_in_env, 0, (3,)).numpy()
    rows = np.ascontiguousarray(u).view(np.dtype((np.void, 3 * 8))).ravel()
    assert len(np.unique(rows)) == envs * episodes
    assert len(np.unique(u[:, 0])) == envs * episodes  # no single component repeats either


def test_uniforms_are_inside_the_open_interval_with_uniform_moments():
    n = 400_000
    u = philox_uniforms(KEY, torch.arange(n), torch.full((n,), 3), 0, 2)
    assert u.dtype == torch.float64 and u.min() > 0 and u.max() < 1
    odd = (u * 2**53).numpy()
    assert np.array_equal(odd, np.round(odd)) and (odd % 2 == 1).all()
    flat = u.flatten()
    assert abs(flat.mean() - 0.5) < 0.002
    assert abs(flat.var() - 1 / 12) < 0.001
    assert abs(((flat - 0.5) ** 3).mean()) < 0.0005  # symmetric
    counts = torch.histc(flat, bins=100, min=0, max=1)
    expected = flat.numel() / 100
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 160  # 99 degrees of freedom: p < 1e-4 above 160
    corr = torch.corrcoef(torch.stack([u[:-1, 0], u[1:, 0], u[:-1, 1]]))
    assert corr.sub(torch.eye(3)).abs().max() < 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_every_backend_gives_the_same_bits(device):
    generator = torch.Generator().manual_seed(3)
    env_ids = torch.randint(0, 65_536, (4_096,), generator=generator)
    episodes = torch.randint(-1, 10_000, (4_096,), generator=generator)
    draws = torch.randint(0, 50, (4_096,), generator=generator)
    reference = philox_uniforms(KEY, env_ids, episodes, draws, 3)
    backends = ["numpy", "eager"] if device == "cpu" else CUDA_BACKENDS
    on_device = (env_ids.to(device), episodes.to(device), draws.to(device))
    for backend in backends:
        u = philox_uniforms(KEY, *on_device, 3, backend=backend)
        assert u.device.type == device
        assert torch.equal(u.cpu(), reference), backend
        scalar = philox_uniforms(KEY, *on_device[:2], 7, 3, backend=backend)
        assert torch.equal(scalar.cpu(), philox_uniforms(KEY, env_ids, episodes, 7, 3)), backend


MULTI_KEYS = [derive_key(7, stable_hash(k)) for k in ("pose", "mass", "size", "color", "damp")]


def _singles(keys, numels, *ids, backend=None) -> torch.Tensor:
    return torch.cat(
        [philox_uniforms(k, *ids, m, backend=backend) for k, m in zip(keys, numels, strict=True)], 1
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("numels", [(1, 3, 1, 1, 1), (1,), (4,), (2, 0, 3), (1, 1)])
def test_a_multi_draw_is_the_single_draws_side_by_side(device, numels):
    generator = torch.Generator().manual_seed(4)
    env_ids = torch.randint(-1, 65_536, (2 * 301,), generator=generator)
    episodes = torch.randint(-1, 10_000, (2 * 301,), generator=generator)
    draws = torch.randint(0, 2**40, (2 * 301,), generator=generator)
    keys = MULTI_KEYS[: len(numels)]
    backends = ["numpy", "eager"] if device == "cpu" else CUDA_BACKENDS
    for view in (slice(None), slice(1, None, 2)):  # contiguous and strided
        ids = tuple(t[view].to(device) for t in (env_ids, episodes))
        for draw in (0, 2**33 + 5, draws[view].to(device)):
            for backend in backends:
                got = philox_uniforms_multi(keys, numels, *ids, draw, backend=backend)
                assert got.shape == (ids[0].shape[0], sum(numels)) and got.device.type == device
                singles = _singles(keys, numels, *ids, draw, backend=backend)
                assert torch.equal(got, singles), (backend, draw)
    # Not only self-consistent: the last column of every block is its key's Philox value.
    got = philox_uniforms_multi(keys, numels, env_ids[:3], episodes[:3], draws[:3]).tolist()
    ends = np.cumsum(numels)
    for i in range(3):
        for key, numel, end in zip(keys, numels, ends, strict=True):
            if numel:
                counter = (int(env_ids[i]), int(episodes[i]), int(draws[i]), numel - 1)
                assert got[i][end - 1] == _reference(key, *counter)


def test_a_multi_draw_accepts_any_sequences_and_checks_their_lengths():
    env_ids, episodes = torch.arange(5), torch.arange(5) % 2
    got = philox_uniforms_multi(iter(MULTI_KEYS[:2]), [2, 1], env_ids, episodes, 3)
    assert torch.equal(got, _singles(MULTI_KEYS[:2], (2, 1), env_ids, episodes, 3))
    with pytest.raises(ValueError, match="2 keys but 3 numels"):
        philox_uniforms_multi(MULTI_KEYS[:2], (1, 1, 1), env_ids, episodes, 0)


def test_a_kernel_draw_refuses_counters_of_another_length():
    """A device kernel reads one draw index per env: a wrong length would read past it."""
    env_ids, episodes = torch.arange(5), torch.arange(5) % 2
    with pytest.raises(ValueError, match=r"draw_index of shape \(1,\) for 5 env ids"):
        philox_uniforms_multi(
            MULTI_KEYS[:1], (1,), env_ids, episodes, torch.zeros(1), backend="eager"
        )
    with pytest.raises(ValueError, match=r"episode_in_env of shape \(4,\) for 5 env ids"):
        philox_uniforms_multi(MULTI_KEYS[:1], (1,), env_ids, episodes[:4], 0, backend="eager")


@pytest.mark.parametrize("device", DEVICES)
def test_an_empty_multi_draw_has_the_right_shape(device):
    ids = torch.arange(4, device=device), torch.zeros(4, dtype=torch.int64, device=device)
    none = ids[0][:0], ids[1][:0]
    assert philox_uniforms_multi(MULTI_KEYS[:2], (1, 3), *none, 0).shape == (0, 4)
    assert philox_uniforms_multi((), (), *ids, 0).shape == (4, 0)
    empty = philox_uniforms_multi(MULTI_KEYS[:2], (0, 0), *ids, ids[1])
    assert empty.shape == (4, 0) and empty.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_an_empty_batch_draws_nothing(device):
    none = torch.zeros(0, dtype=torch.int64, device=device)
    u = philox_uniforms(KEY, none, none, 0, 3)
    assert u.shape == (0, 3) and u.device.type == device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draw_never_synchronizes_with_the_host():
    env_ids = torch.arange(45, device="cuda")
    episodes = torch.arange(45, device="cuda") % 4
    philox_uniforms(KEY, env_ids, episodes, 0, 3)  # compile outside the checked region
    torch.cuda.set_sync_debug_mode("error")
    try:
        for draw_index in (0, 1, 5):
            philox_uniforms(KEY, env_ids, episodes, draw_index, 3)
        philox_uniforms(KEY, env_ids, episodes, episodes, 3)
        philox_uniforms(derive_key(1, 2), env_ids, episodes, 9, 3)  # a new key and index
        philox_uniforms_multi(MULTI_KEYS, (1, 3, 1, 1, 1), env_ids, episodes, 4)  # new tables
        philox_uniforms_multi(MULTI_KEYS[:2], (2, 2), env_ids, episodes, episodes)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(philox.triton is None, reason="needs Triton")
def test_triton_kernel_gives_the_numpy_bits_in_tritons_interpreter():
    """The kernel's arithmetic, checked on any machine: Triton's interpreter runs it on CPU."""
    script = textwrap.dedent(
        """
        import torch
        from arena_recording.core.philox import derive_key, philox_uniforms, philox_uniforms_multi
        key = derive_key(7, 99)
        keys = [derive_key(7, k) for k in range(5)]
        g = torch.Generator().manual_seed(0)
        env = torch.randint(-1, 70_000, (300,), generator=g)
        episode = torch.randint(-1, 10**6, (300,), generator=g)
        draws = torch.randint(0, 2**33, (300,), generator=g)
        ids = (env[::2], episode[1:151])  # strided, and an unaligned slice
        for draw in (0, 2**40, draws[:150], draws[::2]):
            for numel in (1, 3):
                got = philox_uniforms(key, *ids, draw, numel, backend="triton")
                assert torch.equal(got, philox_uniforms(key, *ids, draw, numel)), (draw, numel)
            for numels in ((1, 3, 1, 1, 1), (2,), (1, 0, 2)):
                ks = keys[: len(numels)]
                got = philox_uniforms_multi(ks, numels, *ids, draw, backend="triton")
                want = philox_uniforms_multi(ks, numels, *ids, draw)
                assert torch.equal(got, want), (draw, numels)
        print("same bits")
        """
    )
    assert "same bits" in run_in_triton_interpreter(script)


@needs_triton_on_cuda
def test_triton_is_the_cuda_default_and_serves_odd_shapes_and_strided_inputs():
    generator = torch.Generator().manual_seed(5)
    env_ids = torch.randint(-1, 65_536, (2 * 4_099,), generator=generator)
    episodes = torch.randint(-1, 10_000, (2 * 4_099,), generator=generator)
    draws = torch.randint(0, 2**40, (2 * 4_099,), generator=generator)
    for view in (slice(None), slice(1, None, 2), slice(3, 4_102)):  # strided, unaligned slices
        ids = (env_ids[view], episodes[view], draws[view])
        cuda_ids = tuple(t.cuda() for t in (env_ids, episodes, draws))
        cuda_ids = tuple(t[view] for t in cuda_ids)
        for numel in (1, 3, 7):
            u = philox_uniforms(KEY, *cuda_ids, numel)
            assert torch.equal(u.cpu(), philox_uniforms(KEY, *ids, numel)), (view, numel)
            u = philox_uniforms(KEY, *cuda_ids[:2], 11, numel)
            assert torch.equal(u.cpu(), philox_uniforms(KEY, *ids[:2], 11, numel)), (view, numel)
    assert philox_uniforms(KEY, cuda_ids[0][:0], cuda_ids[1][:0], 0, 3).shape == (0, 3)


@needs_triton_on_cuda
def test_triton_draws_of_any_batch_size_and_keys_share_one_kernel_per_draw_index_kind():
    env_ids = torch.arange(70_000, device="cuda")
    episodes = env_ids % 13
    for n in (1, 2, 45, 256, 257, 4_096, 70_000):
        for numel in (1, 2, 3, 16):
            philox_uniforms(KEY, env_ids[:n], episodes[-n:], 0, numel)
            philox_uniforms(KEY, env_ids[:n], episodes[-n:], episodes[:n], numel)
        for numels in ((1, 3, 1, 1, 1), (2, 5), (1,)):  # other keys and widths: no new kernel
            keys = MULTI_KEYS[: len(numels)]
            philox_uniforms_multi(keys, numels, env_ids[:n], episodes[-n:], 7)
            philox_uniforms_multi(keys, numels, env_ids[:n], episodes[-n:], episodes[:n])
    device = torch.cuda.current_device()
    assert len(philox._philox_kernel.device_caches[device][0]) == 2
