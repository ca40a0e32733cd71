"""Replay: recorded episodes run again with the factor values they ran with.

The gymnasium CartPole demo's policy is deterministic; the env's own randomness (the initial
state) is made a factor here (``init_state``), so a replayed episode must end exactly as its
source did.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from conftest import run_demo
from omegaconf import OmegaConf

from arena_recording.analysis.load import load
from arena_recording.cli import main as cli
from arena_recording.core.config import RecorderCfg, ReplayCfg, TermCfg
from arena_recording.core.session import Session
from arena_recording.core.terms import core, variations
from arena_recording.core.variations import build_variations
from arena_recording.demo.cartpole import CONFIG, policy
from arena_recording.errors import ConfigError
from arena_recording.integrations.gym_wrapper import VariationsWrapper

FACTORS = ["gravity", "force_mag", "tau", "label", "init_state"]
OUTCOME = ["success", "length", "termination", "status"]


class InitState(gym.Wrapper):
    """CartPole starting from the state in ``init_state`` (a factor) instead of its own RNG."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.init_state: list[float] | None = None

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self.init_state is not None:
            self.env.unwrapped.state = np.array(self.init_state)
            obs = np.array(self.init_state, dtype=np.float32)
        return obs, info


def specs(**changes: Any) -> dict[str, Any]:
    """The demo's variations plus the initial state, with ``changes`` (``None`` removes)."""
    found = {
        **CONFIG["variations"],
        "init_state": {"sampler": {"type": "uniform", "low": [-0.05] * 4, "high": [0.05] * 4}},
    }
    found.update(changes)
    return {k: v for k, v in found.items() if v is not None}


def run(
    out: Path,
    num_envs: int,
    num_episodes: int = 1,
    replay: ReplayCfg | None = None,
    variation_specs: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Evaluate the demo policy (a replay: its budget) and load what was recorded."""
    cfg = RecorderCfg(
        terms={"core": TermCfg(func=core), "variations": TermCfg(func=variations)},
        flush_every_s=0,
        replay=replay,
    )
    gains = OmegaConf.create(CONFIG["policy"])
    with Session(cfg, out):
        vector = gym.make_vec(
            "CartPole-v1", num_envs=num_envs, vectorization_mode="sync", wrappers=[InitState]
        )
        env = VariationsWrapper(
            vector,
            build_variations(variation_specs or specs(), "variations"),
            seed=0,
            success="truncated",
            num_episodes=num_episodes,
        )
        obs, _ = env.reset(seed=0)
        while not env.identity.quota_met():
            obs, *_ = env.step(policy(obs, gains))
        env.close()
    return load(out).episodes


def factor_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("variations.")]


def sources(replayed: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    """The source row of each replayed row, in the replayed rows' order."""
    keys = list(zip(replayed["replay_of.run_id"], replayed["replay_of.episode_id"], strict=True))
    return source.set_index(["run_id", "episode_id"]).loc[keys].reset_index()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("source") / "run"
    frame = run(out, num_envs=8, num_episodes=64)
    assert 0 < (~frame["success"].astype(bool)).sum() < len(frame)  # failures to replay
    return out, frame


def test_failing_episodes_replay_on_fewer_envs_with_identical_factors_and_outcomes(
    source: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    path, frame = source
    failed = frame[~frame["success"].astype(bool)]
    replayed = run(
        tmp_path / "replay", 3, replay=ReplayCfg(source=str(path), where="success == false")
    )

    assert len(replayed) == len(failed)  # the budget is one episode per selected row
    assert sorted(replayed["replay_of.episode_id"]) == sorted(failed["episode_id"])
    assert set(replayed["replay_of.run_id"]) == set(frame["run_id"])
    assert sorted(replayed["env_id"].unique()) == [0, 1, 2]
    original = sources(replayed, frame)
    columns = factor_columns(frame)
    assert len(columns) == 4 + 4  # init_state's four components
    for column in columns:
        assert replayed[column].tolist() == original[column].tolist(), column
    for column in OUTCOME:
        assert replayed[column].tolist() == original[column].tolist(), column
    manifest = json.loads((tmp_path / "replay" / "manifest.json").read_text())
    assert manifest["replay"]["rows"] == len(failed)
    assert manifest["replay"]["replayed"] == FACTORS and manifest["replay"]["live"] == {}
    assert manifest["counts"]["episodes"] == len(failed)


def test_same_seed_reproduces_factor_values_without_a_source(
    source: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    """The second path: same seed and (env, episode in env), same values; no file needed."""
    _, frame = source
    again = run(tmp_path / "again", num_envs=8, num_episodes=16)
    keys = ["env_id", "episode_in_env"]
    merged = again.merge(frame, on=keys, suffixes=("", ".source"))
    assert len(merged) == 16
    for column in factor_columns(frame):
        assert merged[column].tolist() == merged[f"{column}.source"].tolist(), column


def test_selection_by_episode_ids_and_query(
    source: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    path, frame = source
    ids = frame["episode_id"].iloc[:6].tolist()
    replay = ReplayCfg(source=str(path), episodes=ids, where="`variations.gravity` > 10")
    replayed = run(tmp_path / "replay", 2, replay=replay)
    wanted = frame[frame["episode_id"].isin(ids) & (frame["variations.gravity"] > 10)]
    assert sorted(replayed["replay_of.episode_id"]) == sorted(wanted["episode_id"])
    with pytest.raises(ConfigError) as bad:
        run(tmp_path / "bad", 2, replay=ReplayCfg(source=str(path), where="gravity >"))
    assert bad.value.key == "recorder.replay.where"
    with pytest.raises(ConfigError, match="selects none"):
        run(tmp_path / "none", 2, replay=ReplayCfg(source=str(path), episodes=[10**6]))


def test_partial_replay_keeps_new_factors_live_and_says_so(
    source: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    path, frame = source
    extra = {"sampler": {"type": "uniform", "low": 0.0, "high": 1.0}}
    replayed = run(
        tmp_path / "replay",
        4,
        replay=ReplayCfg(source=str(path), episodes=list(range(10))),
        variation_specs=specs(extra=extra),
    )
    assert len(replayed) == 10
    original = sources(replayed, frame)
    for column in factor_columns(frame):
        assert replayed[column].tolist() == original[column].tolist(), column
    drawn = replayed["variations.extra"]
    assert drawn.between(0, 1).all() and drawn.nunique() == 10  # drawn by its sampler
    manifest = json.loads((tmp_path / "replay" / "manifest.json").read_text())
    assert manifest["replay"]["replayed"] == FACTORS
    assert list(manifest["replay"]["live"]) == ["extra"]


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        (
            {"gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 6.0}}},
            "gravity",
            "bounds",
        ),
        ({"label": {"sampler": {"type": "uniform", "low": 0.0, "high": 1.0}}}, "label", "kind"),
        ({"label": {"sampler": {"type": "choice", "choices": ["a", "b"]}}}, "label", "choices"),
        ({"tau": {"sampler": {"type": "constant", "value": [0.02, 0.02]}}}, "tau", "shape"),
        (
            {"tau": {"sampler": {"type": "constant", "value": 0.02}, "scope": "build"}},
            "tau",
            "scope",
        ),
        ({"label": None}, "label", "no enabled variation"),
    ],
)
def test_a_source_that_does_not_fit_stops_the_job_naming_the_factor(
    source: tuple[Path, pd.DataFrame],
    tmp_path: Path,
    changes: dict[str, Any],
    key: str,
    message: str,
) -> None:
    path, _ = source
    replay = ReplayCfg(source=str(path), where="success == false")
    with pytest.raises(ConfigError, match=message) as err:
        run(tmp_path / "replay", 2, replay=replay, variation_specs=specs(**changes))
    assert err.value.key == key
    manifest = json.loads((tmp_path / "replay" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["counts"]["episodes"] == 0


def test_build_scope_values_are_restored_once_per_env(tmp_path: Path) -> None:
    """Each source env ran its own build-scope value: every value gets env slots of its own."""
    build = specs(tau={"sampler": {"type": "uniform", "low": 0.01, "high": 0.03}, "scope": "build"})
    frame = run(tmp_path / "source", num_envs=4, num_episodes=12, variation_specs=build)
    assert frame["variations.tau"].nunique() == 4
    replay = ReplayCfg(source=str(tmp_path / "source"))
    replayed = run(tmp_path / "replay", 6, replay=replay, variation_specs=build)
    original = sources(replayed, frame)
    for column in [*factor_columns(frame), *OUTCOME]:
        assert replayed[column].tolist() == original[column].tolist(), column
    assert replayed.groupby("env_id")["variations.tau"].nunique().max() == 1
    with pytest.raises(ConfigError, match="at least 4 envs"):
        run(tmp_path / "few", 3, replay=replay, variation_specs=build)


def test_rerun_prints_a_command_that_replays_the_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Hydra app: +recorder=replay, and the command ``rerun`` prints runs as printed."""
    source = tmp_path / "source"
    run_demo(
        "arena_recording.demo.cartpole",
        "+recorder=default",
        f"hydra.run.dir={source}",
        "num_envs=8",
        "seed=3",
        cwd=tmp_path,
    )
    assert cli(["rerun", str(source), "--where", "success == false"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "+recorder=replay" in line and "num_envs=8" in line and "seed=3" in line
    replay_dir = tmp_path / "replay"
    command = f"{line} {shlex.quote(f'hydra.run.dir={replay_dir}')} num_envs=5"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    frame, replayed = load(source).episodes, load(replay_dir).episodes
    failed = frame[~frame["success"].astype(bool)]
    assert len(failed) and sorted(replayed["replay_of.episode_id"]) == sorted(failed["episode_id"])
    original = sources(replayed, frame)
    for column in factor_columns(frame):
        assert replayed[column].tolist() == original[column].tolist(), column
    manifest = json.loads((replay_dir / "manifest.json").read_text())
    assert manifest["replay"]["where"] == "success == false"
    assert manifest["job"]["module"] == "arena_recording.demo.cartpole"


def test_isaaclab_runner_replays_failing_slide_episodes_on_fewer_envs(tmp_path: Path) -> None:
    """Isaac Lab: the variations' event terms take the source's values; the slide task has no
    other randomness, so outcomes are identical too."""
    pytest.importorskip("isaaclab")
    source, replay_dir = tmp_path / "source", tmp_path / "replay"
    common = ("rank=false", "num_episodes=16")
    run_demo(
        "arena_recording.evaluate",
        "+recorder=default",
        f"hydra.run.dir={source}",
        "num_envs=4",
        *common,
        cwd=tmp_path,
    )
    run_demo(
        "arena_recording.evaluate",
        "+recorder=replay",
        f"recorder.replay.source={source}",
        "recorder.replay.where='success == false'",
        f"hydra.run.dir={replay_dir}",
        "num_envs=3",
        *common,
        cwd=tmp_path,
    )
    frame, replayed = load(source).episodes, load(replay_dir).episodes
    failed = frame[~frame["success"].astype(bool)]
    assert len(failed) and sorted(replayed["replay_of.episode_id"]) == sorted(failed["episode_id"])
    original = sources(replayed, frame)
    for column in [*factor_columns(frame), *OUTCOME]:
        assert replayed[column].tolist() == original[column].tolist(), column
