"""The record and manifest format: typed round trip, producer, files of schema version 1 (in
tests/data/v1_run, recorded before version 2 existed), newer versions refused, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import CORE_AND_VARIATIONS

from arena_recording.analysis.load import load
from arena_recording.analysis.sweeps import find_jobs, merge_sweep
from arena_recording.cli import main
from arena_recording.core.format import (
    PRODUCER,
    SCHEMA_VERSION,
    Counts,
    FactorSchema,
    ForeignFileError,
    FormatError,
    Manifest,
    find_manifests,
    read_manifest,
    read_records,
)
from arena_recording.core.session import Session
from arena_recording.core.variations import build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper

V1_RUN = Path(__file__).parent / "data" / "v1_run"
FACTORS = {
    "gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 15.0}},
    "offset": {"sampler": {"type": "uniform", "low": [0.0, -1.0], "high": [1.0, 1.0]}},
    "color": {"sampler": {"type": "choice", "choices": ["red", "green"]}},
}


def record(out: Path, episodes: int = 8, resume: bool = False, factors=FACTORS) -> None:
    """Record CartPole episodes into ``out`` through a real session."""
    with Session({**CORE_AND_VARIATIONS, "resume": resume}, out, job={"num": 0, "x": 1}):
        env = VariationsWrapper(
            gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"),
            build_variations(factors),
            seed=1,
            success="truncated",
            num_episodes=episodes,
        )
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        while not env.identity.quota_met():
            env.step(rng.integers(0, 2, env.num_envs))
        env.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    record(out)
    return out


def copy(src: Path, tmp_path: Path) -> Path:
    target = tmp_path / src.name
    shutil.copytree(src, target)
    return target


def test_written_manifest_round_trips_through_the_typed_form(run):
    text = json.loads((run / "manifest.json").read_text())
    manifest = read_manifest(run / "manifest.json")
    assert manifest.to_dict() == text
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert (text["schema_version"], text["producer"]) == (SCHEMA_VERSION, PRODUCER)
    assert manifest.status == "completed" and manifest.counts.episodes == 8
    assert manifest.num_envs == 2 and manifest.seed == 1
    assert manifest.job.num == 0 and manifest.job.extra == {"x": 1}  # unknown job keys kept
    offset = next(f for f in manifest.factors if f.key == "offset")
    assert (offset.shape, offset.low, offset.high) == ((2,), (0.0, -1.0), (1.0, 1.0))
    assert offset.bounds == "hard"
    records, torn = read_records(run / manifest.records)
    assert torn == 0 and [r["seq"] for r in records] == list(range(8))
    assert {r["schema_version"] for r in records} == {SCHEMA_VERSION}


def test_factor_schema_as_samplers_describe_themselves():
    described = {
        "key": "noise",
        "shape": [],
        "scope": "episode",
        "enabled": True,
        "distribution": "normal",
        "kind": "continuous",
        "low": [-0.5],
        "high": [2.5],
        "bounds": "soft",
        "choices": None,
        "weights": None,
        "params": {"mean": 1.0, "std": 0.5, "low": None, "high": None},
    }
    schema = FactorSchema.from_dict(described)
    assert (schema.low, schema.high, schema.bounds, schema.size) == ((-0.5,), (2.5,), "soft", 1)
    assert schema.to_dict() == described
    with pytest.raises(FormatError, match=r"unknown field\(s\) \['scoep'\]"):
        FactorSchema.from_dict({**described, "scoep": "episode"})
    with pytest.raises(FormatError, match="2 values for 1 component"):
        FactorSchema.from_dict({**described, "low": [0.0, 1.0]})
    with pytest.raises(FormatError, match="bounds 'firm'"):
        FactorSchema.from_dict({**described, "bounds": "firm"})


def test_counts_convert_between_the_recorder_tally_and_the_typed_form():
    tally = {"episodes": 5, "terminated": 4, "aborted": 1, "undrawn:mass": 2}
    counts = Counts.from_counter(tally)
    assert counts.undrawn == {"mass": 2} and counts.success is None
    assert dict(counts.to_counter()) == tally | {
        "truncated": 0,
        "resets_without_steps": 0,
    }
    assert Counts.from_dict(counts.to_dict()) == counts
    with pytest.raises(FormatError, match="unknown field"):
        Counts.from_counter({"episodez": 1})


def test_schema_version_1_files_load_into_the_typed_form():
    manifest = read_manifest(V1_RUN / "manifest.json")
    assert manifest.schema_version == 1 and manifest.producer == PRODUCER
    assert manifest.status == "completed" and manifest.counts.episodes == 4
    factors = {f.key: f for f in manifest.factors}
    assert factors["gravity"].low == (5.0,) and factors["gravity"].bounds == "hard"
    # untruncated normal: mean -/+ 3 std, soft; truncated on one side only: soft as well
    masspole = factors["masspole"]
    assert masspole.bounds == "soft"
    assert masspole.low == pytest.approx((0.04,)) and masspole.high == pytest.approx((0.16,))
    length = factors["length"]
    assert length.low == (0.3,) and length.high == pytest.approx((0.8,))
    assert length.bounds == "soft"
    assert factors["offset"].low == (-0.1, 0.0) and factors["offset"].high == (0.1, 0.5)
    colour = factors["colour"]
    assert (colour.kind, colour.choices, colour.weights) == (
        "categorical",
        ("red", "green", "blue"),
        (1.0, 2.0, 1.0),
    )
    assert (factors["pushed"].kind, factors["pushed"].choices) == ("boolean", (False, True))
    assert factors["pushed"].params == {"p": 0.3}
    assert factors["tau"].low == factors["tau"].high == (0.02,)
    assert manifest.to_dict()["schema_version"] == SCHEMA_VERSION  # written in today's layout

    rec = load(V1_RUN)
    assert rec.warnings == [] and len(rec.episodes) == 4
    assert list(rec.episodes["variations.colour"].cat.categories) == ["red", "green", "blue"]
    assert rec.episodes["variations.pushed"].dtype == "boolean"
    assert rec.factor("masspole").bounds == "soft" and rec.factor("tau").excluded == "is constant"
    assert rec.episodes["variations.offset[1]"].between(0.0, 0.5).all()


def test_newer_schema_versions_are_refused_with_a_clear_error(tmp_path, capsys):
    run = copy(V1_RUN, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(
        json.dumps(manifest | {"schema_version": SCHEMA_VERSION + 1, "producer": PRODUCER})
    )
    newer = rf"schema version {SCHEMA_VERSION + 1}.*reads versions up to {SCHEMA_VERSION}"
    with pytest.raises(FormatError, match=newer):
        read_manifest(run / "manifest.json")
    with pytest.raises(FormatError, match=newer):
        load(run)
    assert main(["analyze", str(run)]) == 1
    assert "upgrade arena-recording" in capsys.readouterr().err

    lines = (run / "episodes.jsonl").read_text().splitlines(keepends=True)
    line = json.loads(lines[0]) | {"schema_version": SCHEMA_VERSION + 1}
    (run / "episodes.jsonl").write_text(lines[1] + json.dumps(line) + "\n")
    with pytest.raises(FormatError, match=r"episodes.jsonl:2 has schema version"):
        read_records(run / "episodes.jsonl")


def test_manifests_of_other_tools_are_not_ours(run, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "model", "files": ["a.bin"]}))
    with pytest.raises(ForeignFileError, match="not written by arena-recording"):
        read_manifest(tmp_path / "manifest.json")
    claimed = {**json.loads((run / "manifest.json").read_text()), "producer": "someone-else"}
    (tmp_path / "manifest.rank1.json").write_text(json.dumps(claimed))
    (tmp_path / "manifest.rank2.json").write_text("not json")
    assert find_manifests(tmp_path) == []
    with pytest.raises(ValueError, match="no recording"):
        load(tmp_path)
    # a sweep dir where one job dir holds another tool's manifest: only ours are merged
    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "0")
    (sweep / "1").mkdir()
    shutil.copy(tmp_path / "manifest.json", sweep / "1" / "manifest.json")
    assert [job.dir.name for job in find_jobs(sweep)] == ["0"]
    assert merge_sweep(sweep).episodes == 8
    assert merge_sweep(tmp_path / "sweep" / "1").paths == []  # nothing of ours: nothing written


def test_resume_continues_a_version_1_recording(tmp_path):
    run = copy(V1_RUN, tmp_path)
    before = read_manifest(run / "manifest.json")
    # a resume completes the evaluation: 10 episodes in all, the 4 recorded and 6 more
    record(run, episodes=10, resume=True, factors={"gravity": FACTORS["gravity"]})
    after = read_manifest(run / "manifest.json")
    assert after.schema_version == SCHEMA_VERSION and after.run_id == before.run_id
    assert after.counts.episodes == 4 + 6 and after.counts.terminated >= before.counts.terminated
    records = read_records(run / "episodes.jsonl")[0]
    assert [r["seq"] for r in records] == list(range(10))
    assert [r["schema_version"] for r in records] == [1] * 4 + [SCHEMA_VERSION] * 6
    rec = load(run)
    assert rec.warnings == [] and len(rec.episodes) == 10


def test_resume_refuses_a_manifest_of_another_tool(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "model"}))
    with pytest.raises(ForeignFileError):
        Session({**CORE_AND_VARIATIONS, "resume": True}, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"name": "model"}
    assert read_records(tmp_path / "episodes.jsonl") == ([], 0)  # nothing was written
