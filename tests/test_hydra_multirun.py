"""Multirun sweeps of a real Hydra app: every launcher records each job into its own job dir,
the sweep table joins them, sweeping the recorder group records (or fails loudly), and the
``arena-recording merge`` command covers sweeps that Hydra aborted on a failed job."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra_apps.runner import app_env, manifest, records, run_app

from arena_recording.analysis.sweeps import EPISODES_CSV, EPISODES_DATASET, JOBS_CSV

FINAL_X = "+recorder.terms.final_x={func: my_pkg.metrics:final_x, params: {axis: 0}}"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_sweep(sweep: Path, overrides: list[list[str]]) -> list[list[dict]]:
    """Each job dir holds a completed recording whose overrides start with ``overrides[num]``;
    the sweep table holds a row per episode of every job."""
    per_job = []
    for num, job_overrides in enumerate(overrides):
        job_dir = sweep / str(num)
        info = manifest(job_dir)
        assert info["status"] == "completed", info
        assert info["job"]["num"] == num
        assert info["job"]["overrides"][: len(job_overrides)] == job_overrides
        assert info["job"]["sweep_dir"] == str(sweep)
        rows = records(job_dir / "episodes.jsonl")
        assert rows and info["counts"]["episodes"] == len(rows)
        per_job.append(rows)
    table = read_csv(sweep / EPISODES_CSV)
    assert len(table) == sum(map(len, per_job))
    assert [int(row["job_num"]) for row in table] == [
        num for num, rows in enumerate(per_job) for _ in rows
    ]
    dataset = pq.read_table(sweep / EPISODES_DATASET)
    assert sorted(dataset["job_num"].to_pylist()) == [int(row["job_num"]) for row in table]
    jobs = read_csv(sweep / JOBS_CSV)
    assert [row["job_status"] for row in jobs] == ["completed"] * len(overrides)
    return per_job


@pytest.mark.parametrize(
    "launcher",
    [
        [],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
    ],
    ids=["basic", "joblib", "submitit_local"],
)
def test_multirun_each_launcher(tmp_path: Path, launcher: list[str]) -> None:
    sweep = tmp_path / "sweep"
    proc = run_app(
        "yaml_app.py",
        "-m",
        "seed=0,1",
        "+recorder=[core,variations]",
        *launcher,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr
    per_job = check_sweep(
        sweep,
        [[f"seed={seed}", "+recorder=[core,variations]"] for seed in (0, 1)],
    )
    for seed, rows in enumerate(per_job):
        assert {row["seed"] for row in rows} == {seed}
        assert all(8.0 <= row["variations"]["gravity"] <= 12.0 for row in rows)
    table = read_csv(sweep / EPISODES_CSV)
    assert {row["override.seed"] for row in table} == {"0", "1"}
    assert all(row["override.seed"] == row["seed"] for row in table)
    assert all(8.0 <= float(row["variations.gravity"]) <= 12.0 for row in table)


def test_sweeping_the_recorder_group_records(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_app(
        "yaml_app.py", "-m", "+recorder=core,variations", FINAL_X, f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode == 0, proc.stderr
    core, variations = check_sweep(sweep, [["+recorder=core"], ["+recorder=variations"]])
    assert all("length" in row and "variations" not in row and "final_x" in row for row in core)
    assert all("length" not in row and "gravity" in row["variations"] for row in variations)
    table = read_csv(sweep / EPISODES_CSV)
    assert {row["override.recorder"] for row in table} == {"core", "variations"}


def test_sweeping_the_recorder_group_without_the_callback_fails_loudly(tmp_path: Path) -> None:
    # hydra/env=plain replaces the environment default that registers the callback for every
    # app: the master config of the sweep then has no recorder callback.
    sweep = tmp_path / "sweep"
    overrides = ["-m", "+recorder=core,variations", "hydra/env=plain"]
    proc = run_app("yaml_app.py", *overrides, f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0
    assert "no recorder callback runs in it" in proc.stderr
    assert "TASK STARTED" not in proc.stdout
    assert not list(sweep.rglob("episodes.jsonl"))

    # the fix the message suggests
    fix = "++hydra.callbacks.arena_recording._target_=arena_recording.integrations.hydra_callback.RecorderCallback"
    fixed = tmp_path / "fixed"
    proc = run_app("yaml_app.py", *overrides, fix, f"hydra.sweep.dir={fixed}")
    assert proc.returncode == 0, proc.stderr
    check_sweep(fixed, [["+recorder=core"], ["+recorder=variations"]])


def test_merge_command_after_a_failed_job(tmp_path: Path) -> None:
    # Hydra's basic sweeper re-raises a failed job's error after the batch: no on_multirun_end.
    sweep = tmp_path / "sweep"
    proc = run_app(
        "yaml_app.py", "-m", "+recorder=core", "fail_at=null,40", f"hydra.sweep.dir={sweep}"
    )
    assert proc.returncode != 0 and "task failed on purpose" in proc.stderr
    assert not (sweep / EPISODES_CSV).exists()
    assert manifest(sweep / "0")["status"] == "completed"
    assert manifest(sweep / "1")["status"] == "failed"
    # a torn last line, as a hard kill leaves it, is skipped
    with open(sweep / "1" / "episodes.jsonl", "a") as f:
        f.write('{"seq": 99, "env_')

    command = Path(sys.executable).with_name("arena-recording")
    out = tmp_path / "tables"
    merged = subprocess.run(
        [str(command), "merge", str(sweep), "--out", str(out)],
        env=app_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert merged.returncode == 0, merged.stderr
    assert "2 jobs (1 completed, 1 failed)" in merged.stdout
    assert "skipped 1 torn lines" in merged.stderr
    expected = len(records(sweep / "0" / "episodes.jsonl")) + len(
        records(sweep / "1" / "episodes.jsonl")
    )
    table = read_csv(out / EPISODES_CSV)
    assert len(table) == expected
    assert {(row["job_num"], row["job_status"]) for row in table} == {
        ("0", "completed"),
        ("1", "failed"),
    }
    assert {row["override.fail_at"] for row in table} == {"", "40"}
    jobs = read_csv(out / JOBS_CSV)
    assert jobs[1]["error"] == "RuntimeError: task failed on purpose at step 40"

    empty = subprocess.run(
        [str(command), "merge", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert empty.returncode == 1 and "no recordings" in empty.stderr
