"""Appliers on an articulation (Isaac-Ant, kit-less on the CPU): records equal the read-backs."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import read_records

pytest.importorskip("isaaclab", reason="the isaaclab extra is not installed")

from isaaclab.envs import ManagerBasedRLEnv  # noqa: E402
from isaaclab_local_tasks import task_env_cfg  # noqa: E402

from arena_recording.core.session import Session  # noqa: E402
from arena_recording.demo.slide_env import launch  # noqa: E402
from arena_recording.errors import ConfigError  # noqa: E402
from arena_recording.integrations import isaaclab_appliers as il  # noqa: E402
from arena_recording.integrations.isaaclab_recording import env_episodes, instrument  # noqa: E402
from arena_recording.integrations.isaaclab_variations import variation_event  # noqa: E402

FEET = ".*_foot"
LEGS = ".*_leg"
VARIATIONS = {
    # key: (sampler, applier, mode, selection, read-back of what the record should hold)
    "feet.mass": (
        {"type": "uniform", "low": 0.01, "high": 0.05},
        il.mass,
        "startup",
        {"bodies": FEET},
        lambda env, sel: il.read(env, "body_mass", sel)[:, 0],  # one value for every foot
    ),
    "torso.mass_scale": (
        {"type": "uniform", "low": 0.5, "high": 2.0},
        il.mass_scale,
        "startup",
        {"bodies": "torso"},
        None,  # read back as the torso's mass over its default, below
    ),
    "feet.friction": (
        {"type": "uniform", "low": [0.2, 0.4, 0.6, 0.8], "high": [0.3, 0.5, 0.7, 0.9]},
        il.friction,
        "startup",
        {"bodies": FEET},
        lambda env, sel: il.read(env, "friction", sel),  # one value per foot
    ),
    "torso.com": (
        {"type": "uniform", "low": [-0.02, -0.02, 0.0], "high": [0.02, 0.02, 0.01]},
        il.com_offset,
        "startup",
        {"bodies": "torso"},
        lambda env, sel: il.read(env, "body_com", sel)[:, 0],
    ),
    "joints.damping": (
        {"type": "uniform", "low": [0.05] * 8, "high": [0.5] * 8},
        il.joint_damping,
        "reset",
        {"joints": ".*"},
        lambda env, sel: il.read(env, "joint_damping", sel),
    ),
    "joints.armature": (
        {"type": "log_uniform", "low": 0.01, "high": 0.1},
        il.joint_armature,
        "reset",
        {"joints": ".*"},
        lambda env, sel: il.read(env, "joint_armature", sel)[:, 0],
    ),
    "legs.offset": (
        {"type": "uniform", "low": -0.3, "high": 0.3},
        il.joint_position_offset,
        "reset",
        {"joints": LEGS},
        lambda env, sel: (
            il.read(env, "joint_position", sel)
            - env.scene["robot"].data.default_joint_pos.torch[
                :, il.QUANTITIES["joint_position"].items(env, sel)
            ]
        )[:, 0],
    ),
    "heading": (
        {"type": "uniform", "low": -3.0, "high": 3.0},
        il.yaw,
        "reset",
        {},
        lambda env, sel: il.read_yaw(env, "robot"),
    ),
    "gravity": (
        {"type": "uniform", "low": 5.0, "high": 12.0},
        il.gravity,
        "reset",
        None,
        lambda env, sel: -il.read_gravity(env)[:, 2],
    ),
}

SCOPES = {"startup": "build", "reset": "episode", "interval": "interval"}  # event mode: scope


@pytest.fixture(scope="module")
def app():
    with launch():
        yield


def ant_with_variations(num_envs: int) -> ManagerBasedRLEnv:
    cfg = task_env_cfg("Isaac-Ant", num_envs=num_envs, seed=2)
    cfg.episode_length_s = 0.4
    cfg.events.reset_robot_joints = None  # the legs offset writes the start joint positions
    for key, (sampler, apply, mode, select, _) in VARIATIONS.items():
        block = {"func": apply} if select is None else {"func": apply, "asset": "robot", **select}
        event = variation_event(key, sampler, scope=SCOPES[mode], apply=block)
        setattr(cfg.events, key.replace(".", "_"), event)
    with warnings.catch_warnings():
        # the task's reset_base writes the root pose the heading turns: warned about, intended
        warnings.filterwarnings("ignore", "event term 'reset_base'")
        return ManagerBasedRLEnv(instrument(cfg, success_terms=()))


def test_articulation_variations_read_back_equal_to_the_records(app, tmp_path, recorder_cfg):
    applied = {}
    with Session(recorder_cfg, tmp_path):
        env = ant_with_variations(num_envs=4)
        selections = {
            key: il.selection(env, "robot", **(select or {}))
            for key, (_, _, _, select, _) in VARIATIONS.items()
        }
        torso = selections["torso.mass_scale"]
        default_torso = il.QUANTITIES["body_mass"].default(env, torso)[:, 0]

        def remember(ids):
            values = {
                key: read(env, selections[key]).cpu()
                for key, (*_, read) in VARIATIONS.items()
                if read is not None
            }
            values["torso.mass_scale"] = il.read(env, "body_mass", torso)[:, 0] / default_torso
            for i in ids:
                episode = int(env_episodes(env).identity.episode_in_env[i])
                applied[i, episode] = {k: v[i].tolist() for k, v in values.items()}

        env.reset()
        remember(range(env.num_envs))
        for _ in range(50):
            env.step(torch.zeros(env.num_envs, 8))
            remember(torch.nonzero(env.episode_length_buf == 0).flatten().tolist())
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) >= 8
    for r in records:
        expected = applied[r["env_id"], r["episode_in_env"]]
        assert set(r["variations"]) == set(VARIATIONS)
        for key, value in r["variations"].items():
            assert value == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    # per-item values reached each item: four feet, four frictions; eight joints, eight dampings
    assert len(set(records[0]["variations"]["feet.friction"])) == 4
    assert len(set(records[0]["variations"]["joints.damping"])) == 8


def test_per_item_values_broadcast_or_set_each_item():
    assert il.per_item(torch.tensor([1.0, 2.0]), 3).tolist() == [[1.0] * 3, [2.0] * 3]
    assert il.per_item(torch.tensor([[1.0, 2.0, 3.0]]), 3).tolist() == [[1.0, 2.0, 3.0]]
    rows = il.per_item(torch.tensor([[1.0, 2.0, 3.0]]), 2, width=3)
    assert rows.tolist() == [[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]]
    assert il.per_item(torch.tensor([4.0]), 2, width=3).tolist() == [[[4.0, 0, 0], [4.0, 0, 0]]]
    with pytest.raises(ValueError, match="2 values per env for 3 selected items"):
        il.per_item(torch.tensor([[1.0, 2.0]]), 3)


def test_an_applier_without_an_asset_names_the_variation(app):
    cfg = task_env_cfg("Isaac-Cartpole", num_envs=2, seed=0)
    cfg.events.pole_damping = variation_event(
        "pole.damping",
        {"type": "uniform", "low": 0.0, "high": 1.0},
        apply={"func": il.joint_damping},
    )
    with pytest.raises(ConfigError, match="'joint_damping' writes into a scene asset") as err:
        ManagerBasedRLEnv(cfg)
    assert err.value.key == "pole.damping"


def test_an_unknown_joint_names_the_variation(app):
    cfg = task_env_cfg("Isaac-Cartpole", num_envs=2, seed=0)
    cfg.events.pole_damping = variation_event(
        "pole.damping",
        {"type": "uniform", "low": 0.0, "high": 1.0},
        apply={"func": il.joint_damping, "asset": "robot", "joints": "no_such_joint"},
    )
    with pytest.raises(ConfigError) as err:
        ManagerBasedRLEnv(cfg)
    assert err.value.key == "pole.damping" and "no_such_joint" in str(err.value)
