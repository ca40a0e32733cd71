"""Analysis on real recordings: loading runs, sweeps and records files, data-quality warnings,
the factor ranking on the Isaac Lab demo, and the analyze and catalog commands."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from conftest import CORE_AND_VARIATIONS, read_records, run_demo

from arena_recording.analysis.load import load
from arena_recording.analysis.outcomes import success_rate, wilson
from arena_recording.analysis.sensitivity import DUMMY, METHODS, sensitivity
from arena_recording.cli import main
from arena_recording.core.session import Session
from arena_recording.core.variations import build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper

RECORDER = "+recorder=default"
# every kind of factor; CartPole ignores the attributes it does not know
FACTORS = {
    "gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 40.0}},
    "offset": {"sampler": {"type": "uniform", "low": [0.0, -1.0, 2.0], "high": [1.0, 1.0, 3.0]}},
    "color": {"sampler": {"type": "choice", "choices": ["red", "green", "blue"]}},
    "flag": {"sampler": {"type": "bernoulli", "p": 0.3}},
    "noise": {"sampler": {"type": "normal", "mean": 1.0, "std": 0.5, "low": 0.0}},
    "scale": {"sampler": {"type": "log_uniform", "low": 0.1, "high": 10.0}},
    "tau": {"sampler": {"type": "constant", "value": 0.02}},
}
# the Isaac Lab demo with two extra factors applied to nothing: one drawn during episodes
# (interval scope), one categorical drawn when the env is built
SLIDE_EXTRA = (
    "+variations.gust={sampler: {type: uniform, low: 0.0, high: 1.0}, scope: interval, "
    "apply: {interval_range_s: [0.05, 0.1]}}",
    "+variations.tint={sampler: {type: choice, choices: [red, green, blue]}, apply: null, "
    "scope: build}",
)


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """A run dir recorded through the gymnasium adapter, with a factor of every kind."""
    out = tmp_path_factory.mktemp("cartpole")
    with Session(CORE_AND_VARIATIONS, out):
        env = VariationsWrapper(
            gym.make_vec("CartPole-v1", 8, vectorization_mode="sync"),
            build_variations(FACTORS),
            seed=0,
            success="truncated",
            num_episodes=80,
        )
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        while not env.identity.quota_met():
            env.step(rng.integers(0, 2, env.num_envs))
        env.close()
    return out


@pytest.fixture(scope="module")
def cartpole_sweep(tmp_path_factory):
    """A Hydra multirun of the CartPole demo over the upper bound of gravity."""
    out = tmp_path_factory.mktemp("sweep")
    run_demo(
        "arena_recording.demo.cartpole",
        "-m",
        RECORDER,
        f"hydra.sweep.dir={out}",
        "eval.num_episodes=32",
        "variations.gravity.sampler.high=12,40",
        cwd=out,
    )
    return out


@pytest.fixture(scope="module")
def slide_run(tmp_path_factory):
    """512 episodes of the Isaac Lab demo task through the evaluation runner (about a minute on
    the CPU); its own ranking printout is checked too."""
    pytest.importorskip("isaaclab")
    out = tmp_path_factory.mktemp("slide")
    printed = run_demo(
        "arena_recording.evaluate",
        RECORDER,
        f"hydra.run.dir={out}",
        "num_envs=64",
        "num_episodes=512",
        "seed=0",
        *SLIDE_EXTRA,
        cwd=out,
    )
    (out / "printed.txt").write_text(printed)
    return out


def copy_run(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# loading -------------------------------------------------------------------------------------


def test_run_dir_becomes_a_typed_frame(cartpole_run):
    assert (cartpole_run / "episodes.parquet").exists()  # compacted when the session finished
    rec = load(cartpole_run)
    df = rec.episodes
    assert rec.kind == "run" and rec.warnings == []
    assert len(df) == 80 and df["seq"].tolist() == list(range(80))
    assert [f.column for f in rec.factors] == [
        "variations.gravity",
        "variations.offset[0]",
        "variations.offset[1]",
        "variations.offset[2]",
        "variations.color",
        "variations.flag",
        "variations.noise",
        "variations.scale",
        "variations.tau",
    ]
    assert "variations.offset" not in df and df["variations.offset[1]"].between(-1, 1).all()
    assert (
        df["variations.offset[2]"].between(2, 3).all() and df["variations.offset[2]"].nunique() > 1
    )
    # categories in the manifest's order, not sorted or in order of appearance
    assert list(df["variations.color"].cat.categories) == ["red", "green", "blue"]
    assert df["variations.color"].notna().all()
    assert df["variations.flag"].dtype == "boolean" and df["success"].dtype == "boolean"
    assert str(df["start_time"].dt.tz) == "UTC"
    assert df["variations.tau"].tolist() == pytest.approx([0.02] * 80)
    noise = rec.factor("noise")
    assert (noise.low, noise.bounds) == (0.0, "soft") and noise.high == pytest.approx(2.5)
    assert "values may lie beyond" in noise.note
    assert rec.factor("scale").distribution == "log_uniform"
    assert rec.factor("tau").excluded == "is constant"
    assert not any(c.startswith(("override.", "job_")) for c in df)


def test_records_file_alone_and_beside_its_manifest(cartpole_run, tmp_path):
    beside = load(cartpole_run / "episodes.jsonl")
    pd.testing.assert_frame_equal(beside.episodes, load(cartpole_run).episodes)
    assert beside.kind == "file" and len(beside.factors) == 9

    shutil.copy(cartpole_run / "episodes.jsonl", tmp_path / "episodes.jsonl")
    alone = load(tmp_path / "episodes.jsonl")
    assert alone.factors == [] and len(alone.episodes) == 80
    assert any("no manifest" in w for w in alone.warnings)
    with pytest.raises(ValueError, match="no factor to analyse"):
        sensitivity(alone)


def test_partial_last_line_is_skipped_and_reported(cartpole_run, tmp_path):
    run = copy_run(cartpole_run, tmp_path)
    with open(run / "episodes.jsonl", "a") as f:
        f.write('{"schema_version": 1, "run_id": "')  # a write cut short by a kill
    rec = load(run)
    assert len(rec.episodes) == 80
    assert rec.warnings == ["run: skipped 1 incomplete or unreadable line(s)"]


def test_seq_gaps_and_duplicates_are_reported(cartpole_run, tmp_path):
    run = copy_run(cartpole_run, tmp_path)
    lines = (run / "episodes.jsonl").read_text().splitlines(keepends=True)
    # lose seq 5 and 6, repeat seq 10 twice, and lose the last two lines (found via the manifest)
    kept = lines[:5] + lines[7:11] + [lines[10]] * 2 + lines[11:78]
    (run / "episodes.jsonl").write_text("".join(kept))
    rec = load(run)
    problems = " | ".join(rec.warnings)
    assert "2 duplicate record(s) (seq 10)" in problems
    assert "4 missing record(s) (seq 5-6, 78-79)" in problems


def test_sweep_dir_has_job_and_override_columns(cartpole_sweep):
    rec = load(cartpole_sweep)
    df = rec.episodes
    assert rec.kind == "sweep" and rec.warnings == [] and len(rec.jobs) == 2
    assert df.groupby("job_num").size().to_dict() == {0: 32, 1: 32}
    assert {"job_dir", "job_status", "override.eval.num_episodes"} <= set(df.columns)
    high = df.groupby("job_num")["override.variations.gravity.sampler.high"].first()
    assert high.to_dict() == {0: 12, 1: 40}
    assert df.loc[df["job_num"] == 0, "variations.gravity"].max() <= 12
    gravity = rec.factor("gravity")
    assert (gravity.low, gravity.high) == (5.0, 40.0) and "differ between jobs" in gravity.note
    assert list(df["variations.label"].cat.categories) == ["a", "b", "c"]


def test_failed_job_is_reported(cartpole_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(cartpole_sweep, sweep)
    manifest = json.loads((sweep / "1" / "manifest.json").read_text())
    manifest |= {"status": "failed", "error": "RuntimeError: boom"}
    (sweep / "1" / "manifest.json").write_text(json.dumps(manifest))
    (sweep / "2" / ".hydra").mkdir(parents=True)  # a job that died before recording
    rec = load(sweep)
    assert "job 1 (1): status failed: RuntimeError: boom" in rec.warnings
    assert "job 2 (2): nothing recorded (no manifest)" in rec.warnings


def test_dir_without_recording_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no recording"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")


def test_wilson_interval():
    assert all(map(math.isnan, wilson(0, 0)))  # no episodes, no rate
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(361, 512)
    assert (low, high) == pytest.approx((0.6642, 0.7429), abs=1e-4)


# sensitivity ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slide_ranking(slide_run):
    return load(slide_run), sensitivity(load(slide_run), "success", seed=0)


def test_ranking_puts_speed_and_friction_above_mass_and_the_no_effect_factor(slide_ranking):
    rec, result = slide_ranking
    assert rec.warnings == [] and result.episodes == 512
    table = result.table
    strong = ["variations.speed", "variations.friction"]
    weak = ["variations.mass", "variations.light"]
    assert max(table.loc[strong, "rank"]) < min(table.loc[weak, "rank"])
    for method in METHODS:  # every method on its own agrees
        assert min(table.loc[strong, method]) > max(table.loc[weak, method]), method
        assert (table[f"{method}_conf"] > 0).all() and np.isfinite(table[method]).all()
    # at 512 episodes only speed clears the dummies' upper confidence bound for every method
    assert table.loc["variations.speed", "effect"] == "clear"
    assert (table.loc[weak, "effect"] != "clear").all()
    pawn = table.loc["variations.speed", "pawn"]
    assert f"Clear effect on success: speed (PAWN {pawn:.2f}, " in result.summary()


def test_runner_prints_the_success_rate_ranking_and_report(slide_run):
    printed = (slide_run / "printed.txt").read_text().splitlines()
    assert any(line.startswith("success rate ") and "over 512 episodes" in line for line in printed)
    header = next(i for i, line in enumerate(printed) if line.startswith("rank  factor"))
    first, second = (printed[header + k].split()[1] for k in (1, 2))
    assert {first, second} == {"speed", "friction"}
    report = next(line for line in printed if line.startswith("report: "))
    assert Path(report.removeprefix("report: ")).read_text().startswith("<!DOCTYPE html>")
    assert len(read_records(slide_run / "episodes.jsonl")) == 512


def test_ranking_reads_the_manifest_and_leaves_out_what_it_cannot_use(slide_ranking):
    rec, result = slide_ranking
    assert rec.factor("gust").scope == "interval"
    assert isinstance(rec.episodes["variations.gust"].iloc[0], list)  # as recorded
    assert "variations.gust" not in result.table.index
    assert "gust left out: it is drawn several times per episode (interval scope)" in result.notes
    # a build-scope categorical drawn per env: analysed through its categories
    assert list(rec.episodes["variations.tint"].cat.categories) == ["red", "green", "blue"]
    assert "variations.tint" in result.table.index
    assert success_rate(rec.episodes).successes == int(rec.episodes["success"].sum())


def test_ranking_is_reproducible_and_leaves_global_state_alone(cartpole_run):
    rec = load(cartpole_run)
    # importing SciPy (through SALib) adds warning filters once; the ranking must add none
    from SALib.analyze import delta, pawn, rbd_fast  # noqa: F401

    state = np.random.get_state()[1].copy()
    filters = list(warnings.filters)
    first = sensitivity(rec, "length", seed=3, num_resamples=20)
    assert (np.random.get_state()[1] == state).all() and warnings.filters == filters
    again = sensitivity(rec, "length", seed=3, num_resamples=20)
    pd.testing.assert_frame_equal(first.table, again.table)
    assert "tau left out: it is constant" in first.notes
    assert "variations.color" in first.table.index and "variations.flag" in first.table.index
    assert json.loads(json.dumps(first.to_dict()))["outcome"] == "length"


def test_ranking_errors_say_why(cartpole_run):
    rec = load(cartpole_run)
    with pytest.raises(ValueError, match="no column 'nope'"):
        sensitivity(rec, "nope")
    with pytest.raises(ValueError, match="not numeric"):
        sensitivity(rec, "termination")
    with pytest.raises(ValueError, match="nothing to rank"):
        sensitivity(rec, "schema_version")
    with pytest.raises(ValueError, match="unknown methods"):
        sensitivity(rec, methods=["sobol"])


# commands ------------------------------------------------------------------------------------


def test_analyze_command_prints_a_table_and_json(cartpole_sweep, capsys):
    assert main(["analyze", str(cartpole_sweep), "--resamples", "20"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["rank", "factor", "PAWN"]
    assert DUMMY in out and "Success rate" in out
    assert main(["analyze", str(cartpole_sweep), "--json", "--resamples", "20"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["kind"] == "sweep" and found["episodes"] == 64
    assert [f["rank"] for f in found["factors"]] == list(range(1, len(found["factors"]) + 1))
    assert set(found["dummy"]) == set(METHODS)


def test_analyze_command_fails_cleanly(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_catalog_lists_variations_and_terms_with_override_paths(capsys):
    assert main(["catalog", "arena_recording.evaluate:evaluate"]) == 0
    out = capsys.readouterr().out
    for line in (
        "variations.speed.sampler.low=0.5",
        "variations.friction.sampler.high=0.6",
        "variations.light.apply=null",
        "recorder.terms.core.enabled=true",
        "recorder.terms.variations.enabled=true",
        "recorder.report=false",
        "+recorder=default or '+recorder=[core,variations]'",
    ):
        assert line in out, line
    assert (
        main(
            [
                "catalog",
                "arena_recording.demo.cartpole:cartpole_eval",
                "--json",
                "variations.gravity.sampler.high=20",
            ]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    gravity, *_, label = found["variations"]
    assert "variations.gravity.sampler.high=20" in gravity["overrides"]
    assert "variations.label.sampler.choices=[a,b,c]" in label["overrides"]
    assert "+variations.label.sampler.weights=null" in label["overrides"]  # not in the config yet
    assert {t["key"]: t["source"] for t in found["terms"]} == {
        "recorder.terms.core": "+recorder=core",
        "recorder.terms.variations": "+recorder=variations",
    }


def test_catalog_of_a_yaml_app(capsys):
    conf = Path(__file__).parent / "hydra_apps" / "conf"
    assert main(["catalog", "eval", "--config-dir", str(conf)]) == 0
    assert "variations.gravity.sampler.high=12.0" in capsys.readouterr().out
