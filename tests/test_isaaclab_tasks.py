"""Recording Isaac Lab's own tasks (Isaac-Cartpole, Isaac-Ant, Isaac-Cartpole-Direct), kit-less.

What each env reported at every step is compared with what was recorded, and recording must
not change the task: trajectories with observation noise on are bit-identical with and
without it. Isaac Lab's own entry-point flow runs in a subprocess, as its scripts do.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import read_records

pytest.importorskip("isaaclab", reason="the isaaclab extra is not installed")

import gymnasium as gym  # noqa: E402
from isaaclab.envs import ManagerBasedRLEnv  # noqa: E402
from isaaclab.utils.noise import UniformNoiseCfg  # noqa: E402
from isaaclab_local_tasks import task_env_cfg  # noqa: E402

from arena_recording.core.session import Session  # noqa: E402
from arena_recording.demo.slide_env import launch  # noqa: E402
from arena_recording.errors import ConfigError  # noqa: E402
from arena_recording.integrations.isaaclab_recording import env_episodes, instrument  # noqa: E402

NUM_ENVS = 4
ENTRY_APP = Path(__file__).parent / "isaaclab_entry_app.py"


@pytest.fixture(scope="module")
def app():
    with launch():
        yield


def rollout(env: Any, steps: int, action: Any) -> dict[str, Any]:
    """Step ``env`` (a gymnasium-style Isaac Lab env); what it reported per ended episode."""
    num_envs = env.unwrapped.num_envs
    length = torch.zeros(num_envs, dtype=torch.long)
    count = [0] * num_envs
    ended: dict[tuple[int, int], tuple[int, bool, bool]] = {}
    observations = []
    for step in range(steps):
        obs, _, terminated, truncated, _ = env.step(action(step))
        observations.append(obs["policy"].clone())
        length += 1
        for i in (terminated | truncated).nonzero().flatten().tolist():
            ended[i, count[i]] = (int(length[i]), bool(terminated[i]), bool(truncated[i]))
            count[i] += 1
            length[i] = 0
    running = {(i, count[i]): int(length[i]) for i in range(num_envs) if length[i] > 0}
    return {"ended": ended, "running": running, "observations": torch.stack(observations)}


def check_records(records: list[dict[str, Any]], seen: dict[str, Any]) -> None:
    """The records are exactly the episodes the env reported, plus aborted running ones."""
    finished = {
        (r["env_id"], r["episode_in_env"]): (r["length"], r["terminated"], r["truncated"])
        for r in records
        if r["status"] != "aborted"
    }
    aborted = {
        (r["env_id"], r["episode_in_env"]): r["length"] for r in records if r["status"] == "aborted"
    }
    assert finished == seen["ended"]
    assert aborted == seen["running"]
    assert len(records) == len(finished) + len(aborted)


def noisy_cartpole_cfg() -> Any:
    cfg = task_env_cfg("Isaac-Cartpole", NUM_ENVS, seed=3)
    cfg.episode_length_s = 0.25  # 15 steps: several auto-resets, each drawing reset offsets
    policy = cfg.observations.policy
    policy.enable_corruption = True
    policy.joint_pos_rel.noise = UniformNoiseCfg(n_min=-0.1, n_max=0.1)
    policy.joint_vel_rel.noise = UniformNoiseCfg(n_min=-0.1, n_max=0.1)
    return cfg


def random_actions(num_envs: int, steps: int) -> Any:
    actions = torch.rand(steps, num_envs, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return lambda step: actions[step]


def test_recording_leaves_the_task_alone(app, tmp_path, recorder_cfg):
    steps = 50
    env = ManagerBasedRLEnv(noisy_cartpole_cfg())
    env.reset()
    off = rollout(env, steps, random_actions(NUM_ENVS, steps))
    cart_position = env.scene["robot"].data.joint_pos.torch[:, 0].clone()
    env.close()
    with Session(recorder_cfg, tmp_path):
        env = ManagerBasedRLEnv(instrument(noisy_cartpole_cfg()))
        env.reset()
        on = rollout(env, steps, random_actions(NUM_ENVS, steps))
        env.close()
    assert not torch.equal(off["observations"][-1][:, 0], cart_position)  # the noise is on
    assert len(off["ended"]) >= 2 * NUM_ENVS  # auto-resets drew new start states
    assert torch.equal(on["observations"], off["observations"])
    assert on["ended"] == off["ended"]
    check_records(read_records(tmp_path / "episodes.jsonl"), on)


def test_every_termination_that_fired_is_named(app, tmp_path, recorder_cfg):
    cfg = task_env_cfg("Isaac-Cartpole", NUM_ENVS, seed=0)
    cfg.terminations.cart_far = copy.deepcopy(cfg.terminations.cart_out_of_bounds)
    with Session(recorder_cfg, tmp_path):
        env = gym.make("Isaac-Cartpole", cfg=instrument(cfg))
        assert env_episodes(env) is env_episodes(env.unwrapped)  # through gymnasium's wrappers
        env.reset()
        # pushed hard one way, every cart leaves the track well before the time limit
        seen = rollout(env, 60, lambda step: torch.ones(NUM_ENVS, 1))
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    check_records(records, seen)
    finished = [r for r in records if r["status"] != "aborted"]
    assert len(finished) >= NUM_ENVS
    assert {r["termination"] for r in finished} == {"cart_out_of_bounds+cart_far"}
    assert all(r["success"] is None for r in records)  # the task has no success term


def test_success_terms_are_checked_when_instrumenting(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path), pytest.raises(ConfigError, match="time_out") as err:
        instrument(task_env_cfg("Isaac-Ant", NUM_ENVS), success_terms=("success",))
    assert err.value.key == "success_terms"
    assert "torso_height" in str(err.value)


def test_ant_records_survival_as_success(app, tmp_path, recorder_cfg):
    cfg = task_env_cfg("Isaac-Ant", NUM_ENVS, seed=0)
    cfg.episode_length_s = 0.25
    with Session(recorder_cfg, tmp_path):
        env = gym.make("Isaac-Ant", cfg=instrument(cfg, success_terms=("time_out",)))
        env.reset()
        actions = torch.rand(40, NUM_ENVS, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
        seen = rollout(env, 40, lambda step: actions[step])
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    check_records(records, seen)
    finished = [r for r in records if r["status"] != "aborted"]
    assert len(finished) >= 2 * NUM_ENVS
    for r in finished:
        assert r["success"] == r["truncated"] == ("time_out" in r["termination"].split("+"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["counts"]["success"] == sum(r["success"] for r in finished)


def test_direct_env_records_its_outcomes(app, tmp_path, recorder_cfg):
    cfg = task_env_cfg("Isaac-Cartpole-Direct", NUM_ENVS, seed=0)
    cfg.episode_length_s = 0.5
    push = torch.tensor([[1.0], [0.0], [1.0], [0.0]])  # envs 0 and 2 leave the track, in time
    with Session(recorder_cfg, tmp_path):
        env = gym.make("Isaac-Cartpole-Direct", cfg=instrument(cfg, success_terms=["time_out"]))
        env.reset()
        seen = rollout(env, 100, lambda step: push)
        env.close()
    records = read_records(tmp_path / "episodes.jsonl")
    check_records(records, seen)
    finished = [r for r in records if r["status"] != "aborted"]
    assert "terminated" in {r["termination"] for r in finished if r["env_id"] in (0, 2)}
    assert {r["termination"] for r in finished if r["env_id"] in (1, 3)} == {"time_out"}
    assert all(r["success"] == (r["termination"] == "time_out") for r in finished)


# --- Isaac Lab's own entry points ---------------------------------------------------------------


def run_entry_app(tmp_path: Path, task: str, steps: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ENTRY_APP), task, str(steps), *args, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("task", "flags", "status"),
    [
        ("Isaac-Cartpole", (), "completed"),  # finished when the env closes
        ("Isaac-Ant", ("--no-close",), "interrupted"),  # finished at exit, the env still open
    ],
)
def test_entry_point_flow_records_the_episodes_it_ran(tmp_path, task, flags, status):
    done = run_entry_app(
        tmp_path,
        task,
        40,
        *flags,
        "env.scene.num_envs=3",
        "env.seed=1",
        "env.episode_length_s=0.25",
        "+recorder=[core,variations]",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reported = json.loads(next(x for x in done.stdout.splitlines() if x.startswith('{"ended"')))
    ended: dict[tuple[int, int], tuple[int, bool, bool]] = {}
    for env_id, length, terminated, truncated in reported["ended"]:
        ended[env_id, sum(key[0] == env_id for key in ended)] = (length, terminated, truncated)
    running = {
        (env_id, sum(key[0] == env_id for key in ended)): length
        for env_id, length in enumerate(reported["running"])
        if length > 0
    }
    check_records(read_records(tmp_path / "episodes.jsonl"), {"ended": ended, "running": running})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == status
    assert manifest["counts"]["episodes"] == len(ended) + len(running)


def test_entry_point_flow_without_an_env_is_empty(tmp_path):
    done = run_entry_app(tmp_path, "Isaac-Cartpole", 0, "--no-env", "+recorder=core")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no env was built" in done.stdout + done.stderr  # Hydra logs to stdout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "empty"
    assert manifest["counts"].get("episodes", 0) == 0


def test_entry_point_flow_that_fails_after_the_job_is_failed(tmp_path):
    done = run_entry_app(tmp_path, "Isaac-Cartpole", 0, "--fail", "+recorder=core")
    assert done.returncode != 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "the rollout failed" in manifest["error"]


def test_entry_point_multirun_stops_at_start(tmp_path):
    done = run_entry_app(tmp_path, "Isaac-Cartpole", 0, "--no-env", "-m", "+recorder=core")
    assert done.returncode != 0
    assert "multirun (-m) cannot record" in done.stderr
