"""Analysis at scale on synthetic runs with known effects: every row counted, Parquet and JSONL
loading alike, torn tails, the sweep dataset read by DuckDB, the dummy rule and the pooling
rule."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from SALib.analyze import pawn

from arena_recording.analysis.columnar import current_parquet
from arena_recording.analysis.compact import compact_dir
from arena_recording.analysis.load import load
from arena_recording.analysis.outcomes import success_rate
from arena_recording.analysis.pools import pools
from arena_recording.analysis.sensitivity import pawn_median, sensitivity
from arena_recording.analysis.sweeps import EPISODES_CSV, EPISODES_DATASET, merge_sweep
from arena_recording.analysis.synthetic import write_synthetic_run
from arena_recording.cli import main
from arena_recording.core.format import JobInfo, read_manifest


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("big") / "run", 100_000, seed=1)


@pytest.fixture
def small_run(tmp_path):
    return write_synthetic_run(tmp_path / "run", 2_000, seed=2)


def sweep_of(root, overrides):
    """A sweep dir with a synthetic job per list of overrides."""
    for num, job_overrides in enumerate(overrides):
        job = JobInfo(num=num, overrides=job_overrides, sweep_dir=str(root))
        write_synthetic_run(root / str(num), 3_000, seed=10 + num, job=job)
    return root


def test_success_rate_of_a_big_run_counts_every_row(big_run):
    expected = read_manifest(big_run / "manifest.json").counts
    rec = load(big_run, columns=["success", "variations.*"])
    rate = success_rate(rec.episodes)
    assert (rate.successes, rate.episodes) == (expected.success, 100_000)
    result = sensitivity(rec, num_resamples=20)
    assert result.episodes == 100_000 and result.rate == rate
    assert (result.subset.size, result.subset.total, result.subset.seed) == (20_000, 100_000, 0)
    assert result.subset.rate.episodes == 20_000
    summary = result.summary()
    assert "20,000 of the 100,000 episodes (seed 0)" in summary
    assert "A second subset (seed 1) ranks" in summary
    assert f"({expected.success}/100000;" in summary
    # the planted effects: speed and friction first, on both subsets
    assert list(result.table.index[:2]) == ["variations.speed", "variations.friction"]
    assert list(result.subset.second_order[:2]) == ["variations.speed", "variations.friction"]
    assert json.loads(json.dumps(result.to_dict()))["subset"]["of"] == 100_000


def test_parquet_and_jsonl_load_to_identical_frames(small_run):
    from_jsonl = load(small_run)
    assert current_parquet(small_run / "episodes.jsonl") is None
    assert main(["compact", str(small_run)]) == 0
    assert current_parquet(small_run / "episodes.jsonl") == small_run / "episodes.parquet"
    from_parquet = load(small_run)
    pd.testing.assert_frame_equal(from_jsonl.episodes, from_parquet.episodes)
    assert from_jsonl.warnings == from_parquet.warnings == []
    assert from_parquet.episodes["variations.colour"].dtype == "category"
    # a line appended after compaction: the Parquet file no longer covers the JSONL
    lines = (small_run / "episodes.jsonl").read_text().splitlines(keepends=True)
    with open(small_run / "episodes.jsonl", "a") as f:
        f.write(lines[-1])
    assert current_parquet(small_run / "episodes.jsonl") is None
    assert len(load(small_run).episodes) == 2_001


def test_torn_tail_loads_and_compacts(small_run):
    with open(small_run / "episodes.jsonl", "a") as f:
        f.write('{"schema_version": 2, "run_id": "ab", "seq": 20')
    rec = load(small_run)
    assert len(rec.episodes) == 2_000
    assert rec.warnings == ["run: skipped 1 incomplete or unreadable line(s)"]
    assert compact_dir(small_run) == [small_run / "episodes.parquet"]
    again = load(small_run)
    pd.testing.assert_frame_equal(rec.episodes, again.episodes)
    assert again.warnings == rec.warnings


def test_corrupt_line_inside_falls_back_to_the_line_reader(small_run):
    lines = (small_run / "episodes.jsonl").read_text().splitlines(keepends=True)
    lines[10] = "not json\n"
    (small_run / "episodes.jsonl").write_text("".join(lines))
    rec = load(small_run)
    assert len(rec.episodes) == 1_999
    assert "run: skipped 1 incomplete or unreadable line(s)" in rec.warnings
    assert any("1 missing record(s) (seq 10)" in w for w in rec.warnings)
    assert rec.episodes["variations.speed"].dtype == np.float64


def test_repeated_identity_is_reported(small_run):
    lines = (small_run / "episodes.jsonl").read_text().splitlines(keepends=True)
    (small_run / "episodes.jsonl").write_text("".join(lines + lines[5:7]))
    problems = " | ".join(load(small_run).warnings)
    assert "2 duplicate record(s) (seq 5-6)" in problems
    assert "2 record(s) repeat an episode identity (run_id, episode_id)" in problems


def test_sweep_dataset_opens_in_duckdb_with_every_episode_once(tmp_path):
    sweep = sweep_of(
        tmp_path / "sweep",
        [["variations.speed.sampler.high=1.5"], ["variations.speed.sampler.high=2"], ["x=a"]],
    )
    table = merge_sweep(sweep)
    assert table.episodes == 9_000 and (sweep / EPISODES_CSV).exists()
    files = sorted(p.name for p in (sweep / EPISODES_DATASET).iterdir())
    assert files == ["job-0000.parquet", "job-0001.parquet", "job-0002.parquet"]
    pattern = str(sweep / EPISODES_DATASET / "*.parquet")
    total, unique = duckdb.sql(
        f"SELECT count(*), count(DISTINCT (run_id, seq)) FROM read_parquet('{pattern}')"
    ).fetchall()[0]
    assert total == unique == 9_000
    per_job = duckdb.sql(
        f"SELECT job_num, count(*), any_value(\"override.x\") FROM read_parquet('{pattern}') "
        "GROUP BY job_num ORDER BY job_num"
    ).fetchall()
    assert per_job == [(0, 3_000, None), (1, 3_000, None), (2, 3_000, "a")]
    high = pq.read_table(
        sweep / EPISODES_DATASET, columns=["override.variations.speed.sampler.high"]
    )
    assert high.schema.field(0).type == "double"  # 1.5 and 2: one type across the jobs
    merge_sweep(sweep)  # merging again replaces the dataset
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchall()[0] == (9_000,)


def test_jobs_pool_only_when_they_differ_in_variations(tmp_path):
    same = sweep_of(
        tmp_path / "same",
        [["policy=a", "variations.speed.sampler.high=1.5"], ["policy=a", "seed=3"]],
    )
    rec = load(same)
    (pool,) = pools(rec)
    assert pool.describe(rec).startswith("jobs 0, 1 pooled: they differ only in")
    result = sensitivity(rec, num_resamples=10)
    assert result.episodes == 6_000 and any("pooled" in n for n in result.notes)

    mixed = sweep_of(tmp_path / "mixed", [["policy=a"], ["policy=b"], ["policy=a", "seed=1"]])
    rec = load(mixed)
    found = pools(rec)
    assert [[j.num for j in p.jobs] for p in found] == [[0, 2], [1]]
    assert [p.fixed for p in found] == [{"policy": "a"}, {"policy": "b"}]
    with pytest.raises(ValueError, match="cannot be pooled"):
        sensitivity(rec)
    part = found[1].recording(rec)
    assert len(part.episodes) == 3_000 and set(part.episodes["job_num"]) == {1}
    assert sensitivity(part, num_resamples=10).episodes == 3_000


def test_clear_only_above_the_dummies_upper_bound(big_run):
    result = sensitivity(load(big_run), num_resamples=20, max_episodes=5_000)
    table = result.table
    for method in result.methods:
        lower = table[method] - table[f"{method}_conf"]
        assert (lower[table["effect"] == "clear"] > result.dummy[method]).all()
        noise_row = result.rows()[-1]
        assert noise_row[-1] == "noise level (upper 95% bound)"
    weak = table[table["effect"] != "clear"]
    for _, row in weak.iterrows():
        assert any(row[m] - row[f"{m}_conf"] <= result.dummy[m] for m in result.methods)
    assert (table.loc[["variations.colour", "variations.light"], "effect"] != "clear").all()


def test_pawn_matches_salib():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(2_000, 3))
    for Y in ((X[:, 0] > 0.4).astype(float), X[:, 1] + rng.normal(size=2_000)):
        problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}
        expected = pawn.analyze(problem, X, Y, S=10)["median"]
        np.testing.assert_allclose(pawn_median(X, Y), expected)


def test_analyze_command_on_a_sweep_of_two_pools(tmp_path, capsys):
    sweep = sweep_of(tmp_path / "sweep", [["policy=a"], ["policy=b"]])
    shutil.rmtree(sweep / "1" / ".hydra", ignore_errors=True)
    assert main(["analyze", str(sweep), "--resamples", "10"]) == 0
    out = capsys.readouterr().out
    assert "== job 0 (policy=a): analysed alone" in out and "== job 1 (policy=b)" in out
    assert main(["analyze", str(sweep), "--resamples", "10", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [p["overrides"] for p in found["pools"]] == [{"policy": "a"}, {"policy": "b"}]
