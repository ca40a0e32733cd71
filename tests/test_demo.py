"""The demo evaluations, run as real Hydra apps with recording turned on from the command line."""

from __future__ import annotations

import json

import pytest
from conftest import read_records, run_demo

RECORDER = "+recorder=default"


def test_cartpole_demo_records_exactly_num_episodes(tmp_path):
    out = run_demo(
        "arena_recording.demo.cartpole",
        RECORDER,
        f"hydra.run.dir={tmp_path}",
        "eval.num_episodes=20",
        "variations.gravity.sampler.high=12",
        cwd=tmp_path,
    )
    assert f"records: {tmp_path / 'episodes.jsonl'}" in out
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == 20
    assert all(5.0 <= r["variations"]["gravity"] <= 12.0 for r in records)
    assert {r["variations"]["label"] for r in records} <= {"a", "b", "c"}


def test_runner_evaluates_the_slide_task_with_overridden_ranges(tmp_path):
    pytest.importorskip("isaaclab")
    out = run_demo(
        "arena_recording.evaluate",
        RECORDER,
        f"hydra.run.dir={tmp_path}",
        "num_envs=8",
        "num_episodes=12",
        "rank=false",
        "variations.friction.sampler.low=0.5",
        "variations.friction.sampler.high=0.6",
        cwd=tmp_path,
    )
    assert "success rate" in out
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == 12 and all(r["status"] != "aborted" for r in records)
    assert all(0.5 <= r["variations"]["friction"] <= 0.6 for r in records)
    assert sorted({r["env_id"] for r in records}) == list(range(8))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["episodes"] == 12
    friction = next(f for f in manifest["factors"] if f["key"] == "friction")
    assert (friction["low"], friction["high"], friction["bounds"]) == ([0.5], [0.6], "hard")


def test_runner_sweeps_over_a_friction_range(tmp_path):
    pytest.importorskip("isaaclab")
    run_demo(
        "arena_recording.evaluate",
        "-m",
        RECORDER,
        f"hydra.sweep.dir={tmp_path}",
        "num_envs=4",
        "num_episodes=8",
        "rank=false",
        "variations.friction.sampler.high=0.2,0.6",
        cwd=tmp_path,
    )
    for job, high in (("0", 0.2), ("1", 0.6)):
        records = read_records(tmp_path / job / "episodes.jsonl")
        assert len(records) == 8
        assert all(r["variations"]["friction"] <= high for r in records)
