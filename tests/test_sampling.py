"""Samplers and variations: determinism, distributions, listeners, config validation."""

from __future__ import annotations

import pytest
import torch

from arena_recording.core.sampling import (
    BernoulliCfg,
    ChoiceCfg,
    ConstantCfg,
    Draw,
    LogUniformCfg,
    NormalCfg,
    UniformCfg,
    sampler_cfg,
)
from arena_recording.core.variations import VariationBase, VariationCfg, observe_variations

N = 20_000


def draw(cfg, env_ids, episodes, key="k", seed=0):
    return cfg.build(key).sample(env_ids, seed=seed, episode_in_env=episodes, dtype=torch.float64)


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
    numeric = draw(ChoiceCfg(choices=[1.0, 5.0], weights=[3, 1]), torch.arange(N), torch.zeros(N))
    assert set(numeric.tolist()) == {1.0, 5.0}
    assert abs(float((numeric == 5.0).double().mean()) - 0.25) < 0.01
    labels = draw(ChoiceCfg(choices=["red", "green", "blue"]), torch.arange(N), torch.zeros(N))
    assert labels.dtype == torch.int64 and set(labels.tolist()) == {0, 1, 2}


def test_build_draw_without_env_ids_is_one_shared_value():
    values = UniformCfg(low=[0.0, 0.0], high=[1.0, 1.0]).build("g").sample(None, seed=3)
    assert values.shape == (2,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "uniform", "low": 2.0, "high": 1.0}, "low 2.0 must be <= high 1.0"),
        ({"type": "uniform", "low": [0, 0], "high": [1, 1, 1]}, "different lengths"),
        ({"type": "log_uniform", "low": 0.0, "high": 1.0}, "low 0.0 must be > 0"),
        ({"type": "normal", "mean": 0.0, "std": 0.0}, "std 0.0 must be > 0"),
        ({"type": "normal", "low": 1.0, "high": 1.0}, "low 1.0 must be < high 1.0"),
        ({"type": "choice", "choices": []}, "choices must not be empty"),
        ({"type": "choice", "choices": [1, 2], "weights": [1.0]}, "1 weights for 2 choices"),
        ({"type": "choice", "choices": [1, 2], "weights": [1.0, -1.0]}, "must be >= 0"),
        ({"type": "bernoulli", "p": 1.5}, "p 1.5 must be in [0, 1]"),
        ({"type": "uniform", "low": 0.0, "hgih": 1.0}, "sampler type 'uniform'"),
        ({"type": "gaussian"}, "unknown sampler type 'gaussian'"),
    ],
)
def test_invalid_sampler_configs_name_the_offender(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sampler_cfg(spec)


def test_invalid_variation_names_the_variation():
    with pytest.raises(ValueError, match="variation 'object.mass'.*low 3.0 must be <= high 1.0"):
        VariationCfg(key="object.mass", sampler={"type": "uniform", "low": 3.0, "high": 1.0})
    with pytest.raises(ValueError, match="variation 'object.mass': scope 'sometimes'"):
        VariationCfg(key="object.mass", sampler={"type": "constant"}, scope="sometimes")


def test_apply_cfg_keeps_listeners_and_remove_stops_them():
    heard: list[Draw] = []
    variation = VariationBase(VariationCfg(key="mass", sampler=UniformCfg(1.0, 2.0)))
    variation.add_sample_listener(heard.append)
    ids, episodes = torch.arange(3), torch.zeros(3, dtype=torch.long)
    variation.sample(ids, seed=0, episode_in_env=episodes)
    variation.apply_cfg(VariationCfg(key="mass", sampler=UniformCfg(10.0, 20.0)))
    values = variation.sample(ids, seed=0, episode_in_env=episodes)
    assert len(heard) == 2 and heard[1].key == "mass"
    assert torch.equal(heard[1].values, values) and bool((values >= 10).all())
    assert torch.equal(heard[1].env_ids, ids)
    variation.remove_sample_listener(heard.append)
    variation.sample(ids, seed=0, episode_in_env=episodes)
    assert len(heard) == 2


def test_observers_see_variations_built_while_registered():
    seen: list[str] = []
    stop = observe_variations(lambda v: seen.append(v.key))
    VariationBase(VariationCfg(key="a", sampler=ConstantCfg(1.0)))
    stop()
    VariationBase(VariationCfg(key="b", sampler=ConstantCfg(1.0)))
    assert seen == ["a"]
