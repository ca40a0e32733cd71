"""The task's own randomization, recorded, on Isaac Lab's Isaac-Cartpole and Isaac-Ant.

The tasks' own env cfgs run kit-less on the CPU with local USDs (``isaaclab_local_tasks``).
Every test compares records with values read from the simulation right after the events ran.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import warp as wp
from conftest import read_records

pytest.importorskip("isaaclab", reason="the isaaclab extra is not installed")

from isaaclab.envs import (
    ManagerBasedRLEnv,  # noqa: E402
    mdp,  # noqa: E402
)
from isaaclab.managers import EventTermCfg, SceneEntityCfg  # noqa: E402
from isaaclab_local_tasks import task_env_cfg  # noqa: E402

from arena_recording.core.session import Session  # noqa: E402
from arena_recording.demo.slide_env import launch  # noqa: E402
from arena_recording.errors import ConfigError  # noqa: E402
from arena_recording.integrations import isaaclab_appliers as il  # noqa: E402
from arena_recording.integrations.isaaclab_recording import env_episodes, instrument  # noqa: E402
from arena_recording.integrations.isaaclab_task_events import record_task_events  # noqa: E402
from arena_recording.integrations.isaaclab_variations import variation_event  # noqa: E402

CARTPOLE_TERMS = ("reset_cart_position", "reset_pole_position")


@pytest.fixture(scope="module")
def app():
    with launch():
        yield


def build(cfg) -> ManagerBasedRLEnv:
    return ManagerBasedRLEnv(instrument(record_task_events(cfg), success_terms=()))


def run(env: ManagerBasedRLEnv, steps: int, remember) -> None:
    """Random actions; ``remember(env_ids)`` right after each reset."""
    env.reset()
    remember(list(range(env.num_envs)))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        actions = torch.rand(env.num_envs, env.action_manager.total_action_dim, generator=generator)
        env.step(actions * 2 - 1)
        remember(torch.nonzero(env.episode_length_buf == 0).flatten().tolist())


def episode(env, i: int) -> tuple[int, int]:
    return i, int(env_episodes(env).identity.episode_in_env[i])


def test_cartpole_reset_offsets_are_recorded_as_the_simulation_ran_them(
    app, tmp_path, recorder_cfg
):
    applied = {}
    with Session(recorder_cfg, tmp_path):
        cfg = task_env_cfg("Isaac-Cartpole", num_envs=6, seed=3)
        cfg.episode_length_s = 0.5
        env = build(cfg)
        joints = il.selection(env, "robot", joints=["slider_to_cart", "cart_to_pole"])

        def remember(ids):
            pos = il.read(env, "joint_position", joints)
            vel = il.read(env, "joint_velocity", joints)
            for i in ids:
                applied[episode(env, i)] = (pos[i].tolist(), vel[i].tolist())

        run(env, 70, remember)
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) >= 12
    for r in records:
        pos, vel = applied[r["env_id"], r["episode_in_env"]]
        for column, term in enumerate(CARTPOLE_TERMS):
            assert r["variations"][f"events.{term}.joint_position"] == pytest.approx(pos[column])
            assert r["variations"][f"events.{term}.joint_velocity"] == pytest.approx(vel[column])
    # the draws differ between episodes: they are the task's random offsets, not defaults
    assert len(
        {r["variations"]["events.reset_pole_position.joint_position"] for r in records}
    ) == len(records)
    factors = {f["key"]: f for f in json.loads((tmp_path / "manifest.json").read_text())["factors"]}
    pole = factors["events.reset_pole_position.joint_position"]
    assert pole["scope"] == "episode" and pole["shape"] == []
    assert pole["distribution"] == "uniform"
    assert pole["low"] == [pytest.approx(-math.pi / 4)] and pole["high"] == [
        pytest.approx(math.pi / 4)
    ]
    assert pole["params"]["operation"] == "add" and pole["params"]["items"] == ["cart_to_pole"]


def test_recording_the_task_events_leaves_the_trajectories_alone(app, tmp_path, recorder_cfg):
    def trajectory(recording: bool) -> torch.Tensor:
        cfg = task_env_cfg("Isaac-Cartpole", num_envs=4, seed=11)
        cfg.episode_length_s = 0.3
        env = build(cfg) if recording else ManagerBasedRLEnv(cfg)
        states = []
        run(env, 40, lambda ids: None)
        for _ in range(20):
            env.step(torch.full((4, 1), 0.5))
            states.append(env.scene["robot"].data.joint_pos.torch.clone())
        env.close()
        return torch.stack(states)

    torch.manual_seed(0)
    plain = trajectory(recording=False)
    with Session(recorder_cfg, tmp_path):
        torch.manual_seed(0)
        recorded = trajectory(recording=True)
    assert torch.equal(plain, recorded)
    assert len(read_records(tmp_path / "episodes.jsonl")) >= 4


def ant_cfg(num_envs: int):
    cfg = task_env_cfg("Isaac-Ant", num_envs=num_envs, seed=7)
    cfg.episode_length_s = 0.5
    events = cfg.events
    events.reset_base.params["pose_range"] = {"x": (-0.3, 0.3), "yaw": (-3.0, 3.0)}
    events.reset_base.params["velocity_range"] = {"x": (-0.5, 0.5), "z": (-0.2, 0.2)}
    events.material = EventTermCfg(
        func=mdp.randomize_rigid_body_material,
        mode="startup",
        params={
            "asset_cfg": SceneEntityCfg("robot", body_names=".*_foot"),
            "static_friction_range": (0.4, 1.2),
            "dynamic_friction_range": (0.4, 1.2),
            "restitution_range": (0.0, 0.3),
            "num_buckets": 16,
        },
    )
    events.torso_mass = EventTermCfg(
        func=mdp.randomize_rigid_body_mass,
        mode="startup",
        params={
            "asset_cfg": SceneEntityCfg("robot", body_names="torso"),
            "mass_distribution_params": (0.8, 1.5),
            "operation": "scale",
        },
    )
    events.push = EventTermCfg(
        func=mdp.push_by_setting_velocity,
        mode="interval",
        interval_range_s=(0.1, 0.2),
        params={"velocity_range": {"x": (-1.0, 1.0), "y": (-1.0, 1.0)}},
    )
    events.torso_com = EventTermCfg(
        func=mdp.randomize_rigid_body_com,
        mode="startup",
        params={
            "asset_cfg": SceneEntityCfg("robot", body_names="torso"),
            "com_range": {"x": (-0.02, 0.02), "y": (-0.01, 0.01)},
        },
    )
    events.gains = EventTermCfg(
        func=mdp.randomize_actuator_gains,
        mode="startup",
        params={
            "asset_cfg": SceneEntityCfg("robot", joint_names=".*_foot"),
            "damping_distribution_params": (0.5, 2.0),
            "operation": "scale",
        },
    )
    events.joint_parameters = EventTermCfg(
        func=mdp.randomize_joint_parameters,
        mode="startup",
        params={
            "asset_cfg": SceneEntityCfg("robot", joint_names=".*_leg"),
            "armature_distribution_params": (0.01, 0.05),
            "operation": "abs",
        },
    )
    events.shove = EventTermCfg(
        func=mdp.apply_external_force_torque,
        mode="reset",
        params={
            "asset_cfg": SceneEntityCfg("robot", body_names="torso"),
            "force_range": (-2.0, 2.0),
            "torque_range": (-0.5, 0.5),
        },
    )
    return cfg


def test_ant_material_mass_push_and_reset_events_are_recorded_as_the_simulation_ran_them(
    app, tmp_path, recorder_cfg
):
    applied = {}
    with Session(recorder_cfg, tmp_path):
        env = build(ant_cfg(num_envs=4))
        robot = env.scene["robot"]
        feet = il.selection(env, "robot", bodies=".*_foot")
        shapes = [s for group in il.shape_groups(env, feet) for s in group]
        torso = il.selection(env, "robot", bodies="torso")
        default_mass = il.read(env, "body_mass", torso)  # after the startup events
        com = il.read(env, "body_com", torso)[:, 0, :2]  # the default torso com is at its origin

        def remember(ids):
            data = robot.data
            offset = (
                data.root_link_pos_w.torch
                - env.scene.env_origins
                - data.default_root_pose.torch[:, :3]
            )
            velocity = data.root_com_vel_w.torch - data.default_root_vel.torch
            force = robot.permanent_wrench_composer.local_force_b
            for i in ids:
                applied[episode(env, i)] = {
                    "x": float(offset[i, 0]),
                    "yaw": float(il.read_yaw(env, "robot")[i]),
                    "velocity": [float(velocity[i, 0]), float(velocity[i, 2])],
                    "joints": il.read(env, "joint_position", il.selection(env, "robot"))[
                        i
                    ].tolist(),
                    "force": wp.to_torch(force)[i, 0].tolist(),
                }

        run(env, 70, remember)
        damping = il.read(env, "actuator_damping", il.selection(env, "robot", joints=".*_foot"))
        armature = il.read(env, "joint_armature", il.selection(env, "robot", joints=".*_leg"))
        friction = il.shape_view("shape_material_mu")(env, feet)[:, shapes]
        restitution = il.shape_view("shape_material_restitution")(env, feet)[:, shapes]
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) >= 8
    pushes = 0
    for r in records:
        v, expected = r["variations"], applied[r["env_id"], r["episode_in_env"]]
        assert v["events.reset_base.pose"] == pytest.approx(
            [expected["x"], expected["yaw"]], abs=1e-5
        )
        assert v["events.reset_base.velocity"] == pytest.approx(expected["velocity"], abs=1e-5)
        assert v["events.reset_robot_joints.joint_position"] == pytest.approx(expected["joints"])
        assert v["events.shove.force"] == [pytest.approx(expected["force"])]
        assert v["events.material.friction"] == pytest.approx(friction[r["env_id"]].tolist())
        assert v["events.material.restitution"] == pytest.approx(restitution[r["env_id"]].tolist())
        assert v["events.torso_mass.mass"] == pytest.approx(float(default_mass[r["env_id"]]))
        assert v["events.torso_com.com_offset"] == pytest.approx(com[r["env_id"]].tolist())
        assert v["events.gains.damping"] == pytest.approx(damping[r["env_id"]].tolist())
        assert v["events.joint_parameters.armature"] == pytest.approx(
            armature[r["env_id"]].tolist()
        )
        for push in v["events.push.velocity_change"]:
            assert 0 <= push["step"] <= r["length"]
            assert all(-1.0 <= c <= 1.0 for c in push["value"]) and push["value"] != [0.0, 0.0]
            pushes += 1
    assert pushes >= len(records)
    assert len({tuple(r["variations"]["events.material.friction"]) for r in records}) == 4
    factors = {f["key"]: f for f in json.loads((tmp_path / "manifest.json").read_text())["factors"]}
    assert factors["events.material.friction"]["scope"] == "build"
    assert factors["events.push.velocity_change"]["scope"] == "interval"
    mass = factors["events.torso_mass.mass"]
    assert mass["params"]["operation"] == "scale" and mass["params"]["items"] == ["torso"]
    assert mass["low"][0] < float(default_mass.min()) < float(default_mass.max()) < mass["high"][0]


def test_two_writers_of_one_quantity_are_named_at_build(app):
    cfg = task_env_cfg("Isaac-Cartpole", num_envs=2, seed=0)
    cfg.events.pole_offset = variation_event(
        "pole.offset",
        {"type": "uniform", "low": -0.1, "high": 0.1},
        apply={"func": il.joint_position_offset, "asset": "robot", "joints": "cart_to_pole"},
    )
    cfg.events.gravity = variation_event(
        "gravity", {"type": "uniform", "low": 8.0, "high": 12.0}, apply={"func": il.gravity}
    )
    cfg.events.task_gravity = EventTermCfg(
        func=mdp.randomize_physics_scene_gravity,
        mode="reset",
        params={"gravity_distribution_params": ([0, 0, -12], [0, 0, -8]), "operation": "abs"},
    )
    with pytest.warns(UserWarning) as caught:
        env = ManagerBasedRLEnv(record_task_events(cfg))
    env.close()
    messages = sorted(str(w.message) for w in caught if "both write" in str(w.message))
    assert len(messages) == 2, messages
    assert "event term 'reset_pole_position' (reset) and variation 'pole.offset'" in messages[0]
    assert "joint_position of 'robot'" in messages[0]
    assert "variation 'gravity' (reset) and event term 'task_gravity'" in messages[1]


def test_replaced_terms_draw_the_same_distribution_reproducibly(app, tmp_path, recorder_cfg):
    def starts(torch_seed: int, out) -> tuple[list, dict]:
        torch.manual_seed(torch_seed)  # Isaac Lab's own terms would draw from this stream
        applied = {}
        with Session(recorder_cfg, out):
            cfg = task_env_cfg("Isaac-Cartpole", num_envs=4, seed=5)
            cfg.episode_length_s = 0.3
            env = ManagerBasedRLEnv(
                instrument(record_task_events(cfg, replace=True), success_terms=())
            )
            joints = il.selection(env, "robot", joints=["slider_to_cart", "cart_to_pole"])

            def remember(ids):
                pos = il.read(env, "joint_position", joints)
                for i in ids:
                    applied[episode(env, i)] = pos[i].tolist()

            run(env, 40, remember)
            env.close()
        return read_records(out / "episodes.jsonl"), applied

    first, applied = starts(0, tmp_path / "a")
    second, _ = starts(1, tmp_path / "b")
    assert len(first) >= 8
    assert [r["variations"] for r in first] == [r["variations"] for r in second]
    for r in first:
        drawn = [r["variations"][f"events.{t}.joint_position"] for t in CARTPOLE_TERMS]
        assert drawn == pytest.approx(applied[r["env_id"], r["episode_in_env"]])  # defaults 0
        assert -math.pi / 4 <= drawn[1] <= math.pi / 4 and -1.0 <= drawn[0] <= 1.0
    factors = json.loads((tmp_path / "a" / "manifest.json").read_text())["factors"]
    pole = next(f for f in factors if f["key"] == "events.reset_pole_position.joint_position")
    assert pole["distribution"] == "uniform" and pole["scope"] == "episode"


def test_a_term_that_cannot_be_replaced_is_named(app):
    cfg = ant_cfg(num_envs=2)
    with pytest.raises(ConfigError, match="randomize_rigid_body_material cannot be replaced"):
        record_task_events(cfg, replace=["material"])
    with pytest.raises(ConfigError, match="'no_such_term'"):
        record_task_events(cfg, replace=["no_such_term"])
