"""Every draw is recorded by the env that drew it, for the episode it belongs to, exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import read_records
from gymnasium.vector import AutoresetMode

from arena_recording.analysis.load import load
from arena_recording.core.config import ChoiceCfg, UniformCfg
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.recorder import DrawError
from arena_recording.core.session import Session, active_session
from arena_recording.core.variations import VariationBase, VariationCfg, build_variations
from arena_recording.errors import ConfigError
from arena_recording.integrations.gym_wrapper import VariationsWrapper

NUM_ENVS = 4


def cartpole() -> gym.vector.VectorEnv:
    return gym.make_vec(
        "CartPole-v1",
        NUM_ENVS,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP},
    )


def gravity(low: float, high: float) -> list[VariationBase]:
    return build_variations({"gravity": {"sampler": {"type": "uniform", "low": low, "high": high}}})


def end(env_ids: torch.Tensor, length: torch.Tensor) -> EpisodeEnd:
    done = torch.ones(len(env_ids), dtype=torch.bool)
    return EpisodeEnd(env_ids, length, done, ~done, torch.zeros(len(env_ids), dtype=torch.long))


def test_an_unrecorded_envs_draws_never_reach_the_recorded_env(tmp_path, recorder_cfg):
    """Two envs in one session, one recording: the other env draws a variation with the same
    key, for the same env ids, in between the recorded env's resets."""
    with Session(recorder_cfg, tmp_path) as session:
        env = VariationsWrapper(cartpole(), gravity(8.0, 12.0), seed=1)
        other = gravity(100.0, 200.0)[0]  # built while the session records, never bound
        other_identity = EpisodeIdentity(NUM_ENVS)
        env.reset(seed=1)
        for _ in range(150):
            env.step(env.action_space.sample())
            other_identity.advance(torch.arange(NUM_ENVS), torch.ones(NUM_ENVS, dtype=torch.bool))
            other.sample(
                torch.arange(NUM_ENVS), seed=1, episode_in_env=other_identity.episode_in_env
            )
        env.close()
    records = read_records(session.records_path)
    assert records
    values = torch.tensor([r["variations"]["gravity"] for r in records], dtype=torch.float64)
    assert bool(((values >= 8.0) & (values <= 12.0)).all())
    own = env.variations[0].sample(
        torch.tensor([r["env_id"] for r in records]),
        seed=1,
        episode_in_env=torch.tensor([r["episode_in_env"] for r in records]),
        dtype=torch.float64,
    )
    torch.testing.assert_close(values, own, rtol=0, atol=0)  # each record: its own env's draw
    assert [f.key for f in session.manifest().factors] == ["gravity"]
    assert session.manifest().factors[0].high == (12.0,)


def test_a_variation_drawn_after_its_env_stopped_recording_is_not_recorded(tmp_path, recorder_cfg):
    (mass,) = build_variations({"mass": {"sampler": {"type": "uniform", "low": 1, "high": 2}}})
    with Session(recorder_cfg, tmp_path) as session:
        identity = EpisodeIdentity(NUM_ENVS)
        recorder = session.bind(identity, seed=0, variations=[mass])
        ids = torch.arange(NUM_ENVS)
        mass.sample(ids, seed=0, episode_in_env=identity.episode_in_env)
        recorder.close(end(ids, torch.full((NUM_ENVS,), 3)))
        session.unbind(recorder)
        # a second env, bound without ``mass``: the first env's variation draws unrecorded
        second = EpisodeIdentity(NUM_ENVS)
        recorder = session.bind(second, seed=0)
        second.advance(ids, torch.ones(NUM_ENVS, dtype=torch.bool))
        mass.sample(ids, seed=0, episode_in_env=second.episode_in_env)
        mass.sample(ids, seed=0, episode_in_env=second.episode_in_env)  # would be a double draw
        recorder.close(end(ids, torch.full((NUM_ENVS,), 3)))
        session.unbind(recorder)
    records = read_records(session.records_path)
    assert len(records) == 2 * NUM_ENVS
    assert all("mass" in r["variations"] for r in records[:NUM_ENVS])
    assert all("mass" not in r.get("variations", {}) for r in records[NUM_ENVS:])


def test_duplicate_keys_in_one_env_are_refused_naming_the_key(tmp_path, recorder_cfg):
    twins = build_variations(
        [
            {"key": "gravity", "sampler": {"type": "uniform", "low": 8, "high": 12}},
            {"key": "gravity", "sampler": {"type": "uniform", "low": 1, "high": 2}},
        ]
    )
    with pytest.raises(ConfigError, match="two variations") as err:
        VariationsWrapper(cartpole(), twins, seed=0)  # refused with or without a session
    assert err.value.key == "gravity"
    with Session(recorder_cfg, tmp_path) as session:
        with pytest.raises(ConfigError) as err:
            session.bind(EpisodeIdentity(NUM_ENVS), seed=0, variations=twins)
        assert err.value.key == "gravity"
        recorder = session.bind(EpisodeIdentity(NUM_ENVS), seed=0, variations=twins[:1])
        with pytest.raises(ConfigError) as err:
            session.attach(twins[1], recorder)  # a variation built after the env was bound
        assert err.value.key == "gravity"
        session.attach(twins[0], recorder)  # the same variation again is no duplicate
        session.unbind(recorder)
    assert active_session() is None


@pytest.mark.parametrize("flush_every_s", [0.0, 60.0])
def test_a_draw_for_another_episode_is_caught_at_the_flush(tmp_path, recorder_cfg, flush_every_s):
    (mass,) = build_variations({"mass": {"sampler": {"type": "uniform", "low": 1, "high": 2}}})
    session = Session({**recorder_cfg, "flush_every_s": flush_every_s}, tmp_path).start()
    identity = EpisodeIdentity(NUM_ENVS)
    recorder = session.bind(identity, seed=0, variations=[mass])
    ids = torch.arange(NUM_ENVS)
    mass.sample(ids, seed=0, episode_in_env=identity.episode_in_env)  # right
    recorder.close(end(ids, torch.full((NUM_ENVS,), 3)))
    identity.advance(ids, torch.ones(NUM_ENVS, dtype=torch.bool))
    stale = identity.episode_in_env.clone()
    stale[2] -= 1  # env 2 draws for the episode that just closed
    mass.sample(ids, seed=0, episode_in_env=stale)
    with pytest.raises(DrawError, match=r"'mass' was drawn for episode 0 of env 2"):
        recorder.close(end(ids, torch.full((NUM_ENVS,), 3)))  # flushes at once with 0 s
        session.finish()  # else the final flush finds it
    session.finish("failed")
    assert active_session() is None


def test_the_episode_check_shared_by_a_batch_follows_the_identity(tmp_path, recorder_cfg):
    """Variations drawn together share one episode check; a tensor reused after the identity
    advanced is checked again, not taken from the earlier batch."""
    mass, friction = build_variations(
        {
            "mass": {"sampler": {"type": "uniform", "low": 1, "high": 2}},
            "friction": {"sampler": {"type": "uniform", "low": 0, "high": 1}},
        }
    )
    session = Session({**recorder_cfg, "flush_every_s": 60.0}, tmp_path).start()
    identity = EpisodeIdentity(NUM_ENVS)
    recorder = session.bind(identity, seed=0, variations=[mass, friction])
    ids = torch.arange(NUM_ENVS)
    episodes = identity.episode_in_env.clone()
    mass.sample(ids, seed=0, episode_in_env=episodes)
    friction.sample(ids, seed=0, episode_in_env=episodes)  # the same batch: right
    recorder.close(end(ids, torch.full((NUM_ENVS,), 3)))
    identity.advance(ids, torch.ones(NUM_ENVS, dtype=torch.bool))
    mass.sample(ids, seed=0, episode_in_env=episodes)  # the closed episodes' numbers: stale
    with pytest.raises(DrawError, match=r"'mass' was drawn for episode 0 of env 0"):
        session.finish()
    session.finish("failed")


def test_numeric_choices_are_recorded_exactly_as_configured(tmp_path, recorder_cfg):
    choice = VariationBase(VariationCfg(key="friction", sampler=ChoiceCfg(choices=[0.1, 0.3])))
    level = VariationBase(VariationCfg(key="level", sampler=ChoiceCfg(choices=[1, 2.5, 7])))
    with Session(recorder_cfg, tmp_path) as session:
        identity = EpisodeIdentity(16)
        recorder = session.bind(identity, seed=0, variations=[choice, level])
        ids = torch.arange(16)
        for _ in range(4):
            for variation in (choice, level):  # float32 draws, as Isaac Lab's are
                drawn = variation.sample(
                    ids, seed=0, episode_in_env=identity.episode_in_env, dtype=torch.float32
                )
                assert variation.values(drawn).dtype == torch.float32  # what appliers get
            recorder.close(end(ids, torch.full((16,), 5)))
            identity.advance(ids, torch.ones(16, dtype=torch.bool))
        session.unbind(recorder)
    text = session.records_path.read_text()
    assert "0.10000000149011612" not in text and "0.30000001192092896" not in text
    records = read_records(session.records_path)
    assert {r["variations"]["friction"] for r in records} == {0.1, 0.3}
    assert {r["variations"]["level"] for r in records} <= {1, 2.5, 7}
    episodes = load(tmp_path).episodes
    assert set(np.unique(episodes["variations.friction"].astype(float))) == {0.1, 0.3}
    assert not episodes["variations.level"].isna().any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_episode_check_adds_no_host_synchronization(tmp_path, recorder_cfg):
    variation = VariationBase(VariationCfg(key="mass", sampler=UniformCfg(low=1.0, high=2.0)))
    session = Session({**recorder_cfg, "flush_every_s": 60.0}, tmp_path).start()
    identity = EpisodeIdentity(1024, "cuda")
    recorder = session.bind(identity, seed=0, variations=[variation])
    ids = torch.arange(0, 1024, 3, device="cuda")
    variation.sample(ids, seed=0, episode_in_env=identity.episode_in_env[ids])  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            variation.sample(ids, seed=0, episode_in_env=identity.episode_in_env[ids])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(DrawError, match="drawn twice"):  # four draws in one episode: recorded
        session.finish()
    assert recorder.counts["episodes"] == 0


@pytest.fixture(scope="module")
def isaaclab_app():
    pytest.importorskip("isaaclab", reason="the isaaclab extra is not installed")
    from arena_recording.demo.slide_env import launch

    with launch():
        yield


def slide_cfg(*events: tuple[str, str, tuple[float, float]], instrumented_first: bool):
    """The sliding-cube task with variation events ``(term, key, (low, high))``; the
    recording hook comes before them or after them in the task's event terms."""
    from arena_recording.demo.slide_env import make_env_cfg
    from arena_recording.integrations import isaaclab_appliers as il
    from arena_recording.integrations.isaaclab_recording import instrument
    from arena_recording.integrations.isaaclab_variations import variation_event

    cfg = make_env_cfg(NUM_ENVS, seed=5, episode_length_s=0.5)
    if instrumented_first:
        instrument(cfg)
    for term, key, (low, high) in events:
        sampler = {"type": "uniform", "low": low, "high": high}
        apply = {"func": il.root_velocity, "asset": "cube"}
        setattr(cfg.events, term, variation_event(key, sampler, apply=apply))
    return cfg if instrumented_first else instrument(cfg)


def test_isaaclab_variation_events_with_one_key_are_refused(isaaclab_app, tmp_path, recorder_cfg):
    from isaaclab.envs import ManagerBasedRLEnv

    events = [("speed", "cube.speed", (0.5, 1.0)), ("speed_again", "cube.speed", (1.0, 2.0))]
    with pytest.raises(ConfigError, match="two variations") as err, Session(recorder_cfg, tmp_path):
        ManagerBasedRLEnv(slide_cfg(*events, instrumented_first=False))
    assert err.value.key == "cube.speed"
    assert active_session() is None


@pytest.mark.parametrize("instrumented_first", [False, True])
def test_isaaclab_variation_events_are_bound_to_their_env(
    isaaclab_app, tmp_path, recorder_cfg, instrumented_first
):
    """Built before or after the recording hook, an env's variation events are its own."""
    from isaaclab.envs import ManagerBasedRLEnv

    events = [("speed", "cube.speed", (0.5, 1.0))]
    with Session(recorder_cfg, tmp_path) as session:
        env = ManagerBasedRLEnv(slide_cfg(*events, instrumented_first=instrumented_first))
        env.reset()
        for _ in range(40):
            env.step(torch.zeros(NUM_ENVS, 0))
        env.close()
    records = read_records(session.records_path)
    assert len(records) >= NUM_ENVS
    assert all(0.5 <= r["variations"]["cube.speed"] <= 1.0 for r in records)
    assert [f.key for f in session.manifest().factors] == ["cube.speed"]
