"""Batched draws: several variations' uniforms from one generator call, values and
notifications bit for bit those of separate draws; one call per reset in Isaac Lab."""

from __future__ import annotations

import pytest
import torch
from conftest import read_records

from arena_recording.core import philox, sampling
from arena_recording.core import recorder as recorder_module
from arena_recording.core.config import (
    BernoulliCfg,
    ChoiceCfg,
    ConstantCfg,
    LogUniformCfg,
    NormalCfg,
    UniformCfg,
    VariationCfg,
)
from arena_recording.core.sampling import Draw, batch_uniforms, build_sampler, counter_uniforms
from arena_recording.core.session import Session
from arena_recording.core.variations import DrawAhead, VariationBase, sample_variations
from arena_recording.errors import ConfigError

SEED = 11
EPISODE_SAMPLERS = {
    "scalar": UniformCfg(low=0.5, high=2.0),
    "vector": UniformCfg(low=[0.0, -1.0, 5.0], high=[1.0, 1.0, 6.0]),
    "normal": NormalCfg(mean=[1.0, 0.0], std=[0.5, 2.0], low=[0.2, -1.0], high=[3.0, 1.0]),
    "log": LogUniformCfg(low=0.01, high=10.0),
    "choice": ChoiceCfg(choices=[0.1, "red", 3], weights=[0.2, 0.5, 0.3]),
    "flag": BernoulliCfg(p=0.3),
    "const": ConstantCfg(value=[1.5, 2.5]),
}


def make_variations(*extra: VariationCfg) -> list[VariationBase]:
    cfgs = [VariationCfg(key=k, sampler=s) for k, s in EPISODE_SAMPLERS.items()]
    return [VariationBase(cfg) for cfg in [*cfgs, *extra]]


def replayed(env_ids, *, episode_in_env, step, device, dtype):
    """A replay override: values that depend on the env and episode only."""
    n = 1 if env_ids is None else env_ids.shape[0]
    if env_ids is None:
        return torch.full((n,), 7.0, dtype=dtype)[0]
    return (env_ids * 10 + episode_in_env).to(dtype)


def listen(variations: list[VariationBase]) -> list[Draw]:
    heard: list[Draw] = []
    for v in variations:
        v.add_sample_listener(heard.append)
    return heard


def assert_same_draws(batched: list[Draw], separate: list[Draw]) -> None:
    assert [d.key for d in batched] == [d.key for d in separate]
    for b, s in zip(batched, separate, strict=True):
        assert b.values.dtype == s.values.dtype and b.values.shape == s.values.shape
        assert torch.equal(b.values, s.values), b.key
        assert b.env_ids is s.env_ids and b.episode_in_env is s.episode_in_env, b.key
        assert b.scope is s.scope and b.draw_index is s.draw_index, b.key


def draw_both(variations, env_ids, **kw):
    """Values and notifications of a batched draw and of the same draws one by one."""
    heard = listen(variations)
    batched = sample_variations(variations, env_ids, **kw)
    batched_heard = list(heard)
    heard.clear()
    separate = {v.key: v.sample(env_ids, **kw) for v in variations}
    return batched, batched_heard, separate, list(heard)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_draws_are_the_separate_draws_bit_for_bit(dtype):
    overridden = VariationCfg(key="replayed", sampler=UniformCfg(low=0.0, high=1.0))
    disabled = VariationCfg(key="off", sampler=UniformCfg(low=3.0, high=4.0), enabled=False)
    variations = make_variations(overridden, disabled)
    variations[-2].override = replayed
    env_ids = torch.tensor([5, 0, 3, 9])
    episodes = torch.tensor([2, 0, 7, 1])
    batched, batched_heard, separate, separate_heard = draw_both(
        variations, env_ids, seed=SEED, episode_in_env=episodes, dtype=dtype
    )
    assert list(batched) == [v.key for v in variations]
    for key, values in separate.items():
        assert batched[key].dtype == values.dtype and torch.equal(batched[key], values), key
    assert torch.equal(
        batched["replayed"],
        replayed(env_ids, episode_in_env=episodes, step=None, device=None, dtype=dtype),
    )
    assert_same_draws(batched_heard, separate_heard)
    assert len(batched_heard) == len(variations)  # a disabled variation is drawn like sample does


def test_one_generator_call_for_all_but_the_overridden(monkeypatch):
    calls: list[tuple[int, ...]] = []
    multi = philox.philox_uniforms_multi

    def counted(keys, numels, *args, **kwargs):
        calls.append(tuple(numels))
        return multi(keys, numels, *args, **kwargs)

    def single(*args, **kwargs):
        raise AssertionError("a batched draw computed uniforms of its own")

    monkeypatch.setattr(philox, "philox_uniforms_multi", counted)
    monkeypatch.setattr(sampling, "philox_uniforms", single)
    variations = make_variations(VariationCfg(key="replayed", sampler=UniformCfg(low=0, high=1)))
    variations[-1].override = replayed
    env_ids = torch.arange(6)
    sample_variations(variations, env_ids, seed=SEED, episode_in_env=torch.zeros(6, dtype=int))
    assert calls == [(1, 3, 2, 1, 1, 1, 2)]


def test_mixed_scopes_one_call_per_scope_and_build_draws_without_env_ids(monkeypatch):
    variations = make_variations(
        VariationCfg(
            key="built", sampler=UniformCfg(low=[0.0, 1.0], high=[1.0, 2.0]), scope="build"
        ),
        VariationCfg(key="light", sampler=BernoulliCfg(p=0.8), scope="build"),
    )
    env_ids = torch.tensor([1, 4])
    kw = {"seed": SEED, "episode_in_env": torch.tensor([3, 0])}
    batched, batched_heard, separate, separate_heard = draw_both(variations, env_ids, **kw)
    assert all(torch.equal(batched[k], v) for k, v in separate.items())
    assert_same_draws(batched_heard, separate_heard)

    builds = variations[-2:]
    shared, shared_heard, one_by_one, one_by_one_heard = draw_both(builds, None, seed=SEED)
    assert shared["built"].shape == (2,) and shared["light"].shape == ()
    assert all(torch.equal(shared[k], v) for k, v in one_by_one.items())
    assert_same_draws(shared_heard, one_by_one_heard)

    calls = []
    multi = philox.philox_uniforms_multi
    monkeypatch.setattr(
        philox, "philox_uniforms_multi", lambda *a, **k: calls.append(len(a[0])) or multi(*a, **k)
    )
    sample_variations(variations, env_ids, **kw)
    assert calls == [len(EPISODE_SAMPLERS), 2]


def test_interval_draws_use_the_step_as_draw_index():
    variations = [
        VariationBase(VariationCfg(key=k, sampler=s, scope="interval"))
        for k, s in EPISODE_SAMPLERS.items()
    ]
    env_ids = torch.tensor([2, 7, 0])
    kw = {"seed": SEED, "episode_in_env": torch.tensor([1, 1, 4]), "step": torch.tensor([5, 0, 9])}
    batched, batched_heard, separate, separate_heard = draw_both(variations, env_ids, **kw)
    assert all(torch.equal(batched[k], v) for k, v in separate.items())
    assert_same_draws(batched_heard, separate_heard)
    with pytest.raises(ValueError, match="needs the step"):
        sample_variations(variations, env_ids, seed=SEED, episode_in_env=kw["episode_in_env"])


def test_batch_uniforms_are_each_samplers_counter_uniforms():
    samplers = [build_sampler(cfg, key) for key, cfg in EPISODE_SAMPLERS.items()]
    env_ids, episodes = torch.tensor([3, 1, 8]), torch.tensor([0, 5, 2])
    blocks = batch_uniforms(samplers, env_ids, seed=SEED, episode_in_env=episodes)
    for sampler, u in zip(samplers, blocks, strict=True):
        expected = counter_uniforms(SEED, sampler._key_hash, env_ids, episodes, 0, sampler.shape)
        assert u.shape == expected.shape and torch.equal(u, expected), sampler.key
    assert batch_uniforms([], env_ids, seed=SEED, episode_in_env=episodes) == []
    empty = batch_uniforms(samplers, env_ids[:0], seed=SEED, episode_in_env=episodes[:0])
    assert [u.shape for u in empty] == [(0, *s.shape) for s in samplers]


def test_wrong_drawn_values_and_repeated_keys_are_refused():
    sampler = build_sampler(UniformCfg(low=[0.0, 0.0], high=[1.0, 1.0]), "pos")
    with pytest.raises(ValueError, match="pos: drawn values of shape"):
        sampler.sample(torch.arange(3), seed=0, drawn=torch.rand(3, 3))
    twice = [
        VariationBase(VariationCfg(key="m", sampler=UniformCfg(low=0, high=1))) for _ in range(2)
    ]
    with pytest.raises(ConfigError, match="two variations"):
        sample_variations(twice, torch.arange(2), seed=0, episode_in_env=torch.zeros(2, dtype=int))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_draws_are_the_cpu_draws_without_host_synchronization():
    variations = make_variations()
    env_ids, episodes = torch.arange(0, 300, 7), torch.arange(43) % 5
    on_cpu = sample_variations(variations, env_ids, seed=SEED, episode_in_env=episodes)
    ids, eps = env_ids.cuda(), episodes.cuda()
    sample_variations(variations, ids, seed=SEED, episode_in_env=eps)  # warm-up: compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_gpu = sample_variations(variations, ids, seed=SEED, episode_in_env=eps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for key, values in on_cpu.items():
        assert torch.equal(on_gpu[key].cpu(), values), key


# --- Isaac Lab: one uniforms call per reset --------------------------------------------------

NUM_ENVS = 6


@pytest.fixture(scope="module")
def isaaclab_app():
    pytest.importorskip("isaaclab", reason="the isaaclab extra is not installed")
    from arena_recording.demo.slide_env import launch

    with launch():
        yield


def test_isaaclab_reset_draws_all_variation_events_with_one_call(
    isaaclab_app, tmp_path, recorder_cfg, monkeypatch
):
    """Four reset variation events (and a disabled one): each reset batch is one uniforms call,
    no variation computes its own, the recorder logs a batch's env ids once (the events share
    them), and the records hold the values the simulation got."""
    from isaaclab.envs import ManagerBasedRLEnv

    from arena_recording.demo.slide_env import make_env_cfg
    from arena_recording.integrations import isaaclab_appliers as il
    from arena_recording.integrations.isaaclab_recording import env_episodes, instrument
    from arena_recording.integrations.isaaclab_variations import variation_event

    factors = {
        "cube.speed": (
            (0.5, 4.0),
            il.root_velocity,
            lambda e: il.read_root_velocity(e, "cube")[:, 0],
        ),
        "cube.start_x": (
            (-0.1, 0.1),
            il.root_position_offset,
            lambda e: il.read_root_position(e, "cube")[:, 0] + 0.8,
        ),
        "cube.friction": ((0.1, 0.6), il.friction, lambda e: il.read_friction(e, "cube")),
        "gravity": ((5.0, 15.0), il.gravity, lambda e: -il.read_gravity(e)[:, 2]),
    }
    cfg = make_env_cfg(NUM_ENVS, seed=5, episode_length_s=0.5)
    for key, ((low, high), apply, _) in factors.items():
        sampler = {"type": "uniform", "low": low, "high": high}
        event = variation_event(key, sampler, apply={"func": apply, "asset": "cube"})
        setattr(cfg.events, key.replace(".", "_"), event)
    cfg.events.unused = variation_event(
        "unused", {"type": "uniform", "low": 0, "high": 1}, enabled=False
    )

    calls: list[int] = []
    singles: list[int] = []
    multi, single = philox.philox_uniforms_multi, sampling.philox_uniforms

    def counted(keys, numels, *args, **kwargs):
        calls.append(len(keys))
        return multi(keys, numels, *args, **kwargs)

    def counted_single(*args, **kwargs):
        singles.append(1)
        return single(*args, **kwargs)

    monkeypatch.setattr(philox, "philox_uniforms_multi", counted)
    monkeypatch.setattr(sampling, "philox_uniforms", counted_single)
    shared: list[bool] = []  # per draw the recorder logged: its env ids are the batch's
    draw_event = recorder_module.DrawEvent
    monkeypatch.setattr(
        recorder_module,
        "DrawEvent",
        lambda *args: shared.append(args[-1]) or draw_event(*args),
    )
    applied: dict[tuple[int, int], dict[str, float]] = {}

    def remember(env, env_ids) -> None:
        values = {key: read(env).cpu() for key, (_, _, read) in factors.items()}
        for i in env_ids:
            episode = int(env_episodes(env).identity.episode_in_env[i])
            applied[i, episode] = {k: float(v[i]) for k, v in values.items()}

    resets = 0
    with Session(recorder_cfg, tmp_path) as session:
        env = ManagerBasedRLEnv(instrument(cfg))
        env.reset()
        resets += 1
        remember(env, range(NUM_ENVS))
        for _ in range(60):
            env.step(torch.zeros(NUM_ENVS, 0))
            reset = torch.nonzero(env.episode_length_buf == 0).flatten().tolist()
            resets += bool(reset)
            remember(env, reset)
        env.close()
    assert resets > 2
    assert calls == [len(factors)] * resets and not singles
    assert len(shared) >= len(factors) * resets and shared.count(True) > 2 * shared.count(False)
    records = read_records(session.records_path)
    assert len(records) >= NUM_ENVS
    for r in records:
        expected = applied[r["env_id"], r["episode_in_env"]]
        for key in factors:
            assert r["variations"][key] == pytest.approx(expected[key], abs=1e-4), key


# drawing ahead (CPU) ------------------------------------------------------------------------


def test_draws_looked_up_ahead_are_the_draws_bit_for_bit():
    """Random reset batches over 37 envs (episodes advancing, some envs jumping ahead as a
    resume does, the batch growing to new env ids): looked-up values and notifications equal
    the draws, with the windows refilled far less often than once per batch."""
    ahead, plain = DrawAhead(episodes=4), make_variations()
    looked_up = make_variations()
    heard_plain, heard_ahead = listen(plain), listen(looked_up)
    gen = torch.Generator().manual_seed(0)
    episodes = torch.zeros(37, dtype=torch.long)
    fills = 0
    fill = ahead._fill

    def counted(*args):
        nonlocal fills
        fills += 1
        fill(*args)

    ahead._fill = counted
    for batch in range(300):
        num_envs = 20 if batch < 100 else 37  # new env ids arrive
        env_ids = torch.randperm(num_envs, generator=gen)[: int(torch.randint(1, 6, (1,)))]
        if batch % 97 == 96:
            episodes[env_ids[0]] += 40  # a resume: the env continues far ahead
        for dtype in (torch.float32,) if batch % 2 else (torch.float64,):
            kw = {"seed": SEED, "episode_in_env": episodes[env_ids].clone(), "dtype": dtype}
            expected = sample_variations(plain, env_ids, **kw)
            got = sample_variations(looked_up, env_ids, **kw, ahead=ahead)
            assert list(got) == list(expected)
            for key, values in expected.items():
                assert got[key].dtype == values.dtype and torch.equal(got[key], values), key
        episodes[env_ids] += 1
    assert_same_draws(heard_ahead, heard_plain)
    assert 3 <= fills < 100


def test_drawing_ahead_follows_a_new_config_a_new_seed_and_an_override():
    (mass,) = make_variations()[:1]
    ahead = DrawAhead()
    ids, episodes = torch.tensor([0, 3]), torch.tensor([0, 2])

    def draw(seed: int = SEED) -> torch.Tensor:
        return sample_variations([mass], ids, seed=seed, episode_in_env=episodes, ahead=ahead)[
            mass.key
        ]

    def direct(seed: int = SEED) -> torch.Tensor:
        return mass.sample(ids, seed=seed, episode_in_env=episodes)

    assert torch.equal(draw(), direct())
    mass.apply_cfg(VariationCfg(key=mass.key, sampler=UniformCfg(low=10.0, high=20.0)))
    assert torch.equal(draw(), direct()) and (draw() >= 10).all()
    assert torch.equal(draw(seed=5), direct(seed=5)) and not torch.equal(draw(seed=5), draw())
    mass.override = replayed
    assert torch.equal(draw(), torch.tensor([0.0, 32.0]))  # the override, not the table
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        DrawAhead(episodes=0)
