"""The Isaac Lab adapter on the real sliding-cube env (kit-less, Newton on the CPU)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch
from conftest import read_records

pytest.importorskip("isaaclab", reason="the isaaclab extra is not installed")

from arena_recording.core.session import Session  # noqa: E402
from arena_recording.demo.slide_env import launch, make_env_cfg  # noqa: E402
from arena_recording.integrations import isaaclab_appliers as il  # noqa: E402
from arena_recording.integrations.isaaclab_recording import env_episodes, instrument  # noqa: E402
from arena_recording.integrations.isaaclab_variations import variation_event  # noqa: E402

NUM_ENVS = 6
FACTORS = {
    # key: (sampler bounds, applier, event mode, read-back of the applied value)
    "cube.speed": (
        (0.5, 4.0),
        il.root_velocity,
        "reset",
        lambda env: il.read_root_velocity(env, "cube")[:, 0],
    ),
    "cube.start_x": (
        (-0.1, 0.1),
        il.root_position_offset,
        "reset",
        lambda env: il.read_root_position(env, "cube")[:, 0] + 0.8,
    ),
    "cube.friction": ((0.1, 0.6), il.friction, "reset", lambda env: il.read_friction(env, "cube")),
    "gravity": ((5.0, 15.0), il.gravity, "reset", lambda env: -il.read_gravity(env)[:, 2]),
    "cube.mass": ((0.5, 5.0), il.mass, "startup", lambda env: il.read_mass(env, "cube")),
}


@pytest.fixture(scope="module")
def app():
    with launch():
        yield


def build_env(with_variations: bool = True):
    from isaaclab.envs import ManagerBasedRLEnv

    cfg = make_env_cfg(NUM_ENVS, seed=5, episode_length_s=1.0)
    if with_variations:
        for key, ((low, high), apply, mode, _) in FACTORS.items():
            sampler = {"type": "uniform", "low": low, "high": high}
            scope = {"startup": "build", "reset": "episode"}[mode]
            event = variation_event(
                key, sampler, scope=scope, apply={"func": apply, "asset": "cube"}
            )
            setattr(cfg.events, key.replace(".", "_"), event)
    return ManagerBasedRLEnv(instrument(cfg))


def read_back(env) -> dict[str, torch.Tensor]:
    return {key: read(env).cpu() for key, (_, _, _, read) in FACTORS.items()}


def test_recorded_values_are_the_values_in_the_simulation(app, tmp_path, recorder_cfg):
    applied: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)

    def remember(env, env_ids) -> None:
        # right after a reset the start state and the model hold this episode's values
        values = read_back(env)
        for i in env_ids:
            episode = int(env_episodes(env).identity.episode_in_env[i])
            applied[i, episode] = {k: float(v[i]) for k, v in values.items()}

    with Session(recorder_cfg, tmp_path):
        env = build_env()
        env.reset()
        remember(env, range(NUM_ENVS))
        for _ in range(120):
            env.step(torch.zeros(NUM_ENVS, 0))
            remember(env, torch.nonzero(env.episode_length_buf == 0).flatten().tolist())
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    finished = [r for r in records if r["status"] != "aborted"]
    assert len(finished) >= NUM_ENVS
    assert {r["termination"] for r in finished} <= {"success", "fell_off", "time_out"}
    for r in records:
        expected = applied[r["env_id"], r["episode_in_env"]]
        for key, value in r["variations"].items():
            assert value == pytest.approx(expected[key], abs=1e-4), key
    for r in finished:
        assert r["success"] == (r["termination"] == "success")
        assert 0 < r["length"] <= 50
    assert [r["episode_in_env"] for r in records if r["env_id"] == 0] == list(
        range(sum(r["env_id"] == 0 for r in records))
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["num_envs"] == NUM_ENVS
    assert {f["key"] for f in manifest["factors"]} == set(FACTORS)
    assert not list(tmp_path.glob("*.hdf5"))


def test_without_a_session_nothing_is_added_and_draws_are_the_same(app, tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path):
        env = build_env()
        env.reset()
        recorded = read_back(env)
        env.close()
    env = build_env()
    assert "arena_recording" not in env.event_manager.active_terms["startup"]
    env.reset()
    assert all(torch.equal(recorded[k], v) for k, v in read_back(env).items())
    env.close()
