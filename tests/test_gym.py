"""The gymnasium adapter on real CartPole vector envs, in every autoreset mode."""

from __future__ import annotations

from collections import defaultdict

import gymnasium as gym
import numpy as np
import pytest
from conftest import read_records
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from arena_recording.core.session import Session
from arena_recording.core.variations import build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]
GRAVITY = {"gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 15.0}}}
NUM_ENVS = 4


def cartpole(mode: AutoresetMode, num_envs: int = NUM_ENVS) -> gym.vector.VectorEnv:
    return gym.make_vec(
        "CartPole-v1",
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": mode},
    )


def run(env: VariationsWrapper, steps: int, actions_seed: int = 0, on_step=None) -> None:
    """Step with random actions; in DISABLED mode reset the finished sub-envs like users must."""
    rng = np.random.default_rng(actions_seed)
    env.reset(seed=0)
    for _ in range(steps):
        if on_step is not None:
            on_step()
        _, _, terminated, truncated, _ = env.step(rng.integers(0, 2, env.num_envs))
        done = terminated | truncated
        if env.autoreset_mode is AutoresetMode.DISABLED and done.any():
            env.reset(options={"reset_mask": done})


@pytest.mark.parametrize("mode", MODES)
def test_records_hold_the_values_the_env_ran_with_and_gymnasium_lengths(
    tmp_path, recorder_cfg, mode
):
    seen: dict[tuple[int, int], set[float]] = defaultdict(set)
    stats_lengths: dict[int, list[int]] = defaultdict(list)
    with Session(recorder_cfg, tmp_path):
        env = VariationsWrapper(cartpole(mode), build_variations(GRAVITY), seed=3)
        stats = RecordEpisodeStatistics(env)  # outside: it must see reset_mask in DISABLED mode
        rng = np.random.default_rng(0)
        stats.reset(seed=0)
        for _ in range(300):
            # the gravity each sub-env steps with, keyed by the episode the wrapper says is open
            for i, sub in enumerate(env.unwrapped.envs):
                seen[i, int(env.identity.episode_in_env[i])].add(sub.unwrapped.gravity)
            _, _, terminated, truncated, info = stats.step(rng.integers(0, 2, NUM_ENVS))
            for i in np.flatnonzero(info.get("_episode", [])):
                stats_lengths[i].append(int(info["episode"]["l"][i]))
            done = terminated | truncated
            if mode is AutoresetMode.DISABLED and done.any():
                stats.reset(options={"reset_mask": done})
    records = [r for r in read_records(tmp_path / "episodes.jsonl") if r["status"] != "aborted"]
    assert len(records) > 10
    for r in records:
        assert seen[r["env_id"], r["episode_in_env"]] == {r["variations"]["gravity"]}
    lengths: dict[int, list[int]] = defaultdict(list)
    for r in records:
        lengths[r["env_id"]].append(r["length"])
    assert lengths == stats_lengths
    for env_id in range(NUM_ENVS):
        assert [r["episode_in_env"] for r in records if r["env_id"] == env_id] == list(
            range(len(lengths[env_id]))
        )


def per_episode(path, key="gravity"):
    return {(r["env_id"], r["episode_in_env"]): r["variations"][key] for r in read_records(path)}


def test_same_seed_same_values_whatever_the_reset_order_or_other_variations(tmp_path, recorder_cfg):
    runs = {
        "a": (GRAVITY, 0),
        "other_actions": (GRAVITY, 1),  # other episode lengths, so other reset batches
        "more_variations": (
            {**GRAVITY, "unused": {"sampler": {"type": "normal", "mean": 0.0, "std": 1.0}}},
            0,
        ),
    }
    for name, (variations, actions_seed) in runs.items():
        with Session(recorder_cfg, tmp_path / name):
            env = VariationsWrapper(
                cartpole(AutoresetMode.NEXT_STEP), build_variations(variations), seed=7
            )
            run(env, 200, actions_seed)
            env.close()
    a = per_episode(tmp_path / "a/episodes.jsonl")
    for name in ("other_actions", "more_variations"):
        other = per_episode(tmp_path / name / "episodes.jsonl")
        common = a.keys() & other.keys()
        assert len(common) > 10
        assert all(a[k] == other[k] for k in common)
    lengths = {
        name: [r["length"] for r in read_records(tmp_path / name / "episodes.jsonl")]
        for name in runs
    }
    assert lengths["a"] != lengths["other_actions"]


def test_zero_step_resets_give_no_record_and_episodes_start_at_zero(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path):
        env = VariationsWrapper(
            cartpole(AutoresetMode.NEXT_STEP), build_variations(GRAVITY), seed=1
        )
        env.reset(seed=0)
        first = [sub.unwrapped.gravity for sub in env.unwrapped.envs]
        env.reset(seed=0)  # reset again before any step: same identities, same values
        assert [sub.unwrapped.gravity for sub in env.unwrapped.envs] == first
        run(env, 100)
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    firsts = {r["env_id"]: r for r in records if r["episode_in_env"] == 0}
    assert sorted(firsts) == list(range(NUM_ENVS))
    assert [firsts[i]["variations"]["gravity"] for i in range(NUM_ENVS)] == first
    assert all(r["length"] > 0 for r in records)


def test_exact_episode_count_with_quota(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path):
        env = VariationsWrapper(
            cartpole(AutoresetMode.SAME_STEP), build_variations(GRAVITY), num_episodes=10
        )
        env.reset(seed=0)
        while not env.identity.quota_met():
            env.step(np.zeros(NUM_ENVS, dtype=np.int64))
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == 10 and all(r["status"] != "aborted" for r in records)
    assert np.bincount([r["env_id"] for r in records]).tolist() == [3, 3, 2, 2]


def test_without_a_session_variations_still_apply_and_nothing_is_written(tmp_path):
    env = VariationsWrapper(cartpole(AutoresetMode.NEXT_STEP), build_variations(GRAVITY), seed=1)
    assert env.recorder is None
    run(env, 50)
    gravities = {sub.unwrapped.gravity for sub in env.unwrapped.envs}
    assert len(gravities) == NUM_ENVS and all(5.0 <= g <= 15.0 for g in gravities)
    assert list(tmp_path.iterdir()) == []


def test_build_scope_and_categorical_variations(tmp_path, recorder_cfg):
    variations = {
        "force_mag": {"sampler": {"type": "choice", "choices": [5.0, 10.0]}, "scope": "build"},
        "kinematics_integrator": {
            "sampler": {"type": "choice", "choices": ["euler", "semi-implicit"]}
        },
    }
    with Session(recorder_cfg, tmp_path):
        env = VariationsWrapper(
            cartpole(AutoresetMode.NEXT_STEP), build_variations(variations), seed=2
        )
        force = [sub.unwrapped.force_mag for sub in env.unwrapped.envs]
        run(env, 100)
        env.close()
    for r in read_records(tmp_path / "episodes.jsonl"):
        assert r["variations"]["force_mag"] == force[r["env_id"]]
        assert r["variations"]["kinematics_integrator"] in ("euler", "semi-implicit")


def test_interval_scope_is_rejected_for_gym():
    variations = build_variations({"push": {"sampler": {"type": "constant"}, "scope": "interval"}})
    with pytest.raises(ValueError, match=r"push\.scope: interval scope is not supported"):
        VariationsWrapper(cartpole(AutoresetMode.NEXT_STEP), variations)


def test_apply_block_names_the_attribute_and_rejects_unknown_keys():
    sampler = {"type": "constant", "value": 7.0}
    spec = {"sampler": sampler, "scope": "build", "apply": {"attribute": "force_mag"}}
    env = VariationsWrapper(
        cartpole(AutoresetMode.NEXT_STEP), build_variations({"push": spec}), seed=0
    )  # with a seed, build-scope values are set at once (without one, at the first reset)
    assert {sub.unwrapped.force_mag for sub in env.unwrapped.envs} == {7.0}
    env.close()
    spec["apply"] = {"atribute": "force_mag"}
    with pytest.raises(ValueError, match=r"push\.apply\.atribute: unknown key"):
        VariationsWrapper(cartpole(AutoresetMode.NEXT_STEP), build_variations({"push": spec}))


def test_an_env_closed_after_the_session_ended_writes_nothing_and_says_so(
    tmp_path, recorder_cfg, caplog
):
    with Session(recorder_cfg, tmp_path):
        env = VariationsWrapper(
            cartpole(AutoresetMode.NEXT_STEP), build_variations(GRAVITY), seed=0
        )
        run(env, 60)
    written = read_records(tmp_path / "episodes.jsonl")
    env.step(np.zeros(env.num_envs, dtype=np.int64))
    env.close()  # its running episodes end after the recording did
    assert read_records(tmp_path / "episodes.jsonl") == written
    assert "came after the recording finished and are not recorded" in caplog.text
