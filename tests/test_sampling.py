"""Samplers and variations: determinism, distributions, listeners, config validation."""

from __future__ import annotations

import pytest
import torch

from arena_recording.core.config import (
    BernoulliCfg,
    ChoiceCfg,
    ConstantCfg,
    LogUniformCfg,
    NormalCfg,
    SamplerCfg,
    UniformCfg,
    VariationCfg,
    sampler_cfg,
    variation_cfg,
)
from arena_recording.core.sampling import Draw, build_sampler, counter_uniforms, stable_hash
from arena_recording.core.variations import VariationBase, build_variations
from arena_recording.errors import ConfigError

N = 20_000


def draw(cfg, env_ids, episodes, key="k", seed=0):
    sampler = build_sampler(cfg, key)
    return sampler.sample(env_ids, seed=seed, episode_in_env=episodes, dtype=torch.float64)


def test_draws_depend_only_on_seed_key_env_episode_not_on_batch():
    cfg = UniformCfg(low=[0.0, -1.0, 5.0], high=[1.0, 1.0, 6.0])
    ids = torch.arange(16)
    episodes = torch.arange(16) % 3
    together = draw(cfg, ids, episodes)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = draw(cfg, ids[order], episodes[order])
    one_by_one = torch.cat([draw(cfg, ids[i : i + 1], episodes[i : i + 1]) for i in range(16)])
    torch.testing.assert_close(shuffled, together[order], rtol=0, atol=0)
    torch.testing.assert_close(one_by_one, together, rtol=0, atol=0)
    assert not torch.equal(draw(cfg, ids, episodes + 1), together)
    assert not torch.equal(draw(cfg, ids, episodes, seed=1), together)
    assert not torch.equal(draw(cfg, ids, episodes, key="other"), together)


def test_components_and_envs_are_independent():
    values = draw(UniformCfg(low=[0.0, 0.0], high=[1.0, 1.0]), torch.arange(N), torch.zeros(N))
    corr = torch.corrcoef(values.T)[0, 1]
    assert abs(float(corr)) < 0.03
    assert len(torch.unique(values[:, 0])) == N


@pytest.mark.parametrize(
    ("cfg", "check"),
    [
        (
            UniformCfg(low=2.0, high=3.0),
            lambda v: v.min() >= 2 and v.max() <= 3 and abs(v.mean() - 2.5) < 0.01,
        ),
        (
            LogUniformCfg(low=0.1, high=10.0),
            lambda v: v.min() >= 0.1 and v.max() <= 10 and abs(v.log().mean()) < 0.03,
        ),
        (
            NormalCfg(mean=1.0, std=2.0),
            lambda v: abs(v.mean() - 1) < 0.05 and abs(v.std() - 2) < 0.05,
        ),
        (
            NormalCfg(mean=0.0, std=1.0, low=-0.5, high=2.0),
            lambda v: v.min() >= -0.5 and v.max() <= 2.0,
        ),
        (
            BernoulliCfg(p=0.3),
            lambda v: v.dtype == torch.bool and abs(v.double().mean() - 0.3) < 0.01,
        ),
        (
            ConstantCfg(value=[1.0, 2.0]),
            lambda v: v.shape == (N, 2) and bool((v == torch.tensor([1.0, 2.0])).all()),
        ),
    ],
)
def test_distributions(cfg, check):
    assert check(draw(cfg, torch.arange(N), torch.zeros(N, dtype=torch.long)))


def test_choice_weights_and_labels():
    index = draw(ChoiceCfg(choices=[1.0, 5.0], weights=[3, 1]), torch.arange(N), torch.zeros(N))
    assert index.dtype == torch.int64 and set(index.tolist()) == {0, 1}
    assert abs(float((index == 1).double().mean()) - 0.25) < 0.01
    labels = draw(ChoiceCfg(choices=["red", "green", "blue"]), torch.arange(N), torch.zeros(N))
    assert labels.dtype == torch.int64 and set(labels.tolist()) == {0, 1, 2}


def test_numeric_choices_are_exact_in_labels_and_values_for_appliers():
    (variation,) = build_variations(
        {"size": {"sampler": {"type": "choice", "choices": [0.1, 0.3]}}}
    )
    drawn = variation.sample(torch.arange(64), seed=0, episode_in_env=torch.zeros(64).long())
    assert variation.labels == [0.1, 0.3]
    assert {variation.labels[i] for i in drawn.tolist()} == {0.1, 0.3}  # never 0.10000000149
    values = variation.values(drawn, dtype=torch.float64)
    assert set(values.tolist()) == {0.1, 0.3}
    assert variation.schema()["choices"] == [0.1, 0.3]


def test_build_draw_without_env_ids_is_one_shared_value():
    values = build_sampler(UniformCfg(low=[0.0, 0.0], high=[1.0, 1.0]), "g").sample(None, seed=3)
    assert values.shape == (2,)


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"type": "uniform", "low": 2.0, "high": 1.0}, "s.low", "low 2.0 must be <= high 1.0"),
        ({"type": "uniform", "low": [0, 0], "high": [1, 1, 1]}, "s", "different lengths"),
        ({"type": "uniform", "low": "abc"}, "s.low", "must be a number or a non-empty list"),
        ({"type": "uniform", "high": float("inf")}, "s.high", "must be finite"),
        ({"type": "log_uniform", "low": 0.0, "high": 1.0}, "s.low", "low 0.0 must be > 0"),
        ({"type": "normal", "mean": 0.0, "std": 0.0}, "s.std", "std 0.0 must be > 0"),
        ({"type": "normal", "low": 1.0, "high": 1.0}, "s.low", "low 1.0 must be < high 1.0"),
        ({"type": "normal", "low": 40.0, "high": 41.0}, "s", "has no mass"),
        ({"type": "choice"}, "s.choices", "choices are required"),
        ({"type": "choice", "choices": []}, "s.choices", "choices must not be empty"),
        ({"type": "choice", "choices": [[1]]}, "s.choices[0]", "is not a number, string"),
        ({"type": "choice", "choices": [1, 2], "weights": [1.0]}, "s.weights", "1 weights for 2"),
        ({"type": "choice", "choices": [1, 2], "weights": [1, -1]}, "s.weights", "must be >= 0"),
        ({"type": "choice", "choices": [1, 2], "weights": [0, 0]}, "s.weights", "not all be zero"),
        ({"type": "bernoulli", "p": 1.5}, "s.p", "p 1.5 must be in [0, 1]"),
        ({"type": "bernoulli", "p": "abc"}, "s.p", "'abc' is not a number"),
        ({"type": "constant", "value": [1, None]}, "s.value", "must be a number"),
        ({"type": "uniform", "low": 0.0, "hgih": 1.0}, "s.hgih", "unknown key"),
        ({"type": "uniform", "mean": 1.0}, "s.mean", "is not a field of a uniform sampler"),
        ({"type": "gaussian"}, "s.type", "'gaussian' is not one of [uniform, log_uniform"),
    ],
)
def test_invalid_sampler_configs_name_the_config_path(spec, key, message):
    with pytest.raises(ConfigError) as raised:
        sampler_cfg(spec, "s")
    assert raised.value.key == key and message in raised.value.message


def test_per_type_configs_validate_on_construction_and_fill_defaults():
    with pytest.raises(ConfigError, match="low 3 must be <= high 1"):
        UniformCfg(low=3, high=1)
    assert sampler_cfg({"type": "log_uniform"}) == LogUniformCfg(low=0.1, high=10.0)
    assert repr(sampler_cfg({"type": "normal", "std": 2})) == (
        "NormalCfg(mean=0.0, std=2, low=None, high=None)"
    )
    assert NormalCfg(mean=[0, 1], std=1).shape == (2,)
    any_type = sampler_cfg({"type": "choice", "choices": [1, 2]}, "s")
    assert any_type == ChoiceCfg(choices=[1, 2]) and any_type.kind == "categorical"
    from_hydra = SamplerCfg(type="uniform", low=[0, 1])  # a node Hydra composed: no defaults
    assert from_hydra.shape == (2,) and from_hydra.checked() == UniformCfg(low=[0, 1], high=1.0)
    assert BernoulliCfg().describe()["weights"] == [0.5, 0.5]


def test_invalid_variations_name_the_config_path():
    bad = {"type": "uniform", "low": 3.0, "high": 1.0}
    with pytest.raises(ConfigError, match=r"^object\.mass\.sampler\.low: low 3.0 must be <="):
        VariationBase(VariationCfg(key="object.mass", sampler=bad))
    cases = [
        ({"sampler": {"type": "constant"}, "scope": "sometimes"}, "v.m.scope", "'sometimes'"),
        ({"sampler": {"type": "constant"}, "scoep": "build"}, "v.m.scoep", "unknown key"),
        ({"sampler": {"type": "constant"}, "enabled": "maybe"}, "v.m.enabled", "not a bool"),
        ({"sampler": {"type": "constant"}, "apply": "x"}, "v.m.apply", "not a mapping"),
        ({"scope": "build"}, "v.m.sampler", "a sampler is required"),
    ]
    for spec, key, message in cases:
        with pytest.raises(ConfigError) as raised:
            variation_cfg(spec, key="m", path="v.m")
        assert raised.value.key == key and message in raised.value.message
    with pytest.raises(ConfigError, match=r"variations\[0\]\.key: a variation needs"):
        build_variations([{"sampler": {"type": "constant"}}], path="variations")


def test_apply_cfg_keeps_listeners_and_remove_stops_them():
    heard: list[Draw] = []
    variation = VariationBase(VariationCfg(key="mass", sampler=UniformCfg(low=1.0, high=2.0)))
    variation.add_sample_listener(heard.append)
    ids, episodes = torch.arange(3), torch.zeros(3, dtype=torch.long)
    variation.sample(ids, seed=0, episode_in_env=episodes)
    variation.apply_cfg(VariationCfg(key="mass", sampler=UniformCfg(low=10.0, high=20.0)))
    values = variation.sample(ids, seed=0, episode_in_env=episodes)
    assert len(heard) == 2 and heard[1].key == "mass"
    assert torch.equal(heard[1].values, values) and bool((values >= 10).all())
    assert torch.equal(heard[1].env_ids, ids)
    variation.remove_sample_listener(heard.append)
    variation.sample(ids, seed=0, episode_in_env=episodes)
    assert len(heard) == 2


EVERY_TYPE = [
    UniformCfg(low=[0.0, -1.0, 5.0], high=[1.0, 1.0, 6.0]),
    LogUniformCfg(low=0.01, high=100.0),
    NormalCfg(mean=0.6, std=0.15, low=0.2, high=1.0),
    NormalCfg(mean=-2.0, std=3.0),
    ChoiceCfg(choices=["wood", "metal", "plastic"], weights=[0.2, 0.5, 0.3]),
    BernoulliCfg(p=0.3),
    ConstantCfg(value=[1.5, -2.0]),
]


def _expected(cfg: SamplerCfg, u: torch.Tensor) -> torch.Tensor:
    """Each sampler's documented mapping of uniforms to values, written out independently."""
    f64 = torch.float64
    if isinstance(cfg, LogUniformCfg):
        lo, hi = torch.tensor(cfg.low, dtype=f64).log(), torch.tensor(cfg.high, dtype=f64).log()
        return (lo + u * (hi - lo)).exp()
    if isinstance(cfg, UniformCfg):
        lo, hi = torch.tensor(cfg.low, dtype=f64), torch.tensor(cfg.high, dtype=f64)
        return lo + u * (hi - lo)
    if isinstance(cfg, NormalCfg):
        mean, std = torch.tensor(cfg.mean, dtype=f64), torch.tensor(cfg.std, dtype=f64)
        lo = torch.tensor(float("-inf") if cfg.low is None else cfg.low, dtype=f64)
        hi = torch.tensor(float("inf") if cfg.high is None else cfg.high, dtype=f64)
        p_lo, p_hi = torch.special.ndtr((lo - mean) / std), torch.special.ndtr((hi - mean) / std)
        return mean + std * torch.special.ndtri(p_lo + u * (p_hi - p_lo))
    if isinstance(cfg, ChoiceCfg):
        cumulative = torch.tensor(cfg.weights, dtype=f64).cumsum(0)
        cumulative = cumulative / cumulative[-1]
        return (u[..., None] >= cumulative[:-1]).sum(-1)
    if isinstance(cfg, BernoulliCfg):
        return u < cfg.p
    return torch.tensor(cfg.value, dtype=f64).expand(u.shape)


@pytest.mark.parametrize("cfg", EVERY_TYPE, ids=lambda c: type(c).__name__)
def test_values_are_the_mapping_of_the_counter_uniforms_at_every_draw(cfg):
    sampler = build_sampler(cfg, "k")
    ids, episodes = torch.arange(500), torch.arange(500) % 7
    u = counter_uniforms(3, stable_hash("k"), ids, episodes, 0, cfg.shape)
    for _ in range(2):  # the second draw uses the bounds cached at the first
        got = sampler.sample(ids, seed=3, episode_in_env=episodes, dtype=torch.float64)
        torch.testing.assert_close(got, _expected(cfg, u), rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cfg", EVERY_TYPE, ids=lambda c: type(c).__name__)
def test_cuda_draws_have_no_host_synchronization_and_the_cpu_values(cfg):
    sampler = build_sampler(cfg, "k")
    ids, episodes = torch.arange(4096), torch.arange(4096) % 5
    on_cpu = sampler.sample(ids, seed=3, episode_in_env=episodes, dtype=torch.float64)
    cuda_ids, cuda_episodes = ids.cuda(), episodes.cuda()
    sampler.sample(cuda_ids, seed=3, episode_in_env=cuda_episodes)  # first use: bounds copied
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            got = sampler.sample(
                cuda_ids, seed=3, episode_in_env=cuda_episodes, dtype=torch.float64
            )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(got.cpu(), on_cpu, rtol=0, atol=1e-12)
