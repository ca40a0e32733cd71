"""Single runs of real Hydra apps (YAML config dir, config_path=None, dataclass primary config)
in subprocesses: recording switched on from the command line, config-only custom terms, failing
and interrupted tasks, and the errors that stop a job before its task runs."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from hydra_apps.runner import app_command, app_env, manifest, records, run_app

CORE_FIELDS = {
    "schema_version",
    "run_id",
    "rank",
    "seq",
    "episode_id",
    "env_id",
    "episode_in_env",
    "status",
    "success",
    "terminated",
    "truncated",
    "termination",
    "length",
    "start_time",
    "end_time",
    "seed",
}
FINAL_X = "+recorder.terms.final_x={func: my_pkg.metrics:final_x, params: {axis: 0}}"
GRAVITY = "+variations={gravity: {sampler: {type: uniform, low: 8, high: 12}}}"
BUILDS_X = "+recorder.terms.x={func: {_target_: my_pkg.metrics.final_x, _partial_: true, axis: 1}}"


def check_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr


def check_gravity(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        assert 8.0 <= row["variations"]["gravity"] <= 12.0


def test_yaml_app_core(tmp_path: Path) -> None:
    out = tmp_path / "run"
    check_ok(run_app("yaml_app.py", "+recorder=core", f"hydra.run.dir={out}"))
    rows = records(out / "episodes.jsonl")
    assert rows and all(set(row) == CORE_FIELDS for row in rows)
    assert [row["seq"] for row in rows] == list(range(len(rows)))
    info = manifest(out)
    assert info["status"] == "completed" and info["error"] is None
    assert info["counts"]["episodes"] == len(rows)
    assert info["job"]["overrides"] == ["+recorder=core"]
    assert info["job"]["num"] is None and info["job"]["sweep_dir"] is None
    assert info["job"]["output_dir"] == str(out)
    assert list(info["terms"]) == ["core"]
    assert [f["key"] for f in info["factors"]] == ["gravity"]

    # a second run into the same dir stops before its task instead of touching the recording
    again = run_app("yaml_app.py", "+recorder=core", f"hydra.run.dir={out}")
    assert again.returncode != 0
    assert "already exists" in again.stderr and "TASK STARTED" not in again.stdout
    assert records(out / "episodes.jsonl") == rows


def test_yaml_app_core_variations_custom_term_and_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_app(
        "yaml_app.py",
        "+recorder=[core,variations]",
        FINAL_X,
        "recorder.fsync=true",
        "seed=3",
        f"hydra.run.dir={out}",
    )
    check_ok(proc)
    rows = records(out / "episodes.jsonl")
    check_gravity(rows)
    assert all(set(row) == CORE_FIELDS | {"variations", "final_x"} for row in rows)
    assert all(isinstance(row["final_x"], float) and row["seed"] == 3 for row in rows)
    info = manifest(out)
    assert info["config"]["fsync"] is True
    assert info["terms"]["final_x"] == {"func": "my_pkg.metrics:final_x", "params": {"axis": 0}}


def test_default_recorder_and_a_target_term_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    check_ok(run_app("yaml_app.py", "+recorder=default", BUILDS_X, f"hydra.run.dir={out}"))
    rows = records(out / "episodes.jsonl")
    check_gravity(rows)
    assert all(set(row) == CORE_FIELDS | {"variations", "x"} for row in rows)
    info = manifest(out)
    assert list(info["terms"]) == ["core", "variations", "x"]
    assert info["terms"]["x"] == {"func": "my_pkg.metrics:final_x", "params": {"axis": 1}}


def test_recording_is_opt_in(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_app("yaml_app.py", f"hydra.run.dir={out}")
    check_ok(proc)
    assert "TASK STARTED" in proc.stdout
    assert not (out / "manifest.json").exists() and not (out / "episodes.jsonl").exists()


def test_disabled_term_and_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_app(
        "none_app.py",
        "+recorder=[core,variations]",
        "recorder.terms.core.enabled=false",
        GRAVITY,
        f"hydra.run.dir={out}",
    )
    check_ok(proc)
    rows = records(out / "episodes.jsonl")
    check_gravity(rows)
    assert "status" not in rows[0] and "length" not in rows[0]
    assert list(manifest(out)["terms"]) == ["variations"]


def test_config_path_none_app(tmp_path: Path) -> None:
    out = tmp_path / "run"
    check_ok(run_app("none_app.py", "+recorder=[core,variations]", GRAVITY, f"hydra.run.dir={out}"))
    rows = records(out / "episodes.jsonl")
    check_gravity(rows)
    assert set(rows[0]) > CORE_FIELDS
    assert manifest(out)["status"] == "completed"


def test_dataclass_app(tmp_path: Path) -> None:
    out = tmp_path / "run"
    check_ok(run_app("dataclass_app.py", "+recorder=[core,variations]", f"hydra.run.dir={out}"))
    rows = records(out / "episodes.jsonl")
    check_gravity(rows)
    assert manifest(out)["status"] == "completed"

    plain = tmp_path / "plain"
    proc = run_app("dataclass_app.py", f"hydra.run.dir={plain}")
    check_ok(proc)
    assert "TASK STARTED" in proc.stdout and not (plain / "manifest.json").exists()


def test_failing_task(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_app("yaml_app.py", "+recorder=core", "fail_at=40", f"hydra.run.dir={out}")
    assert proc.returncode != 0
    assert "task failed on purpose" in proc.stderr
    info = manifest(out)
    assert info["status"] == "failed"
    assert info["error"] == "RuntimeError: task failed on purpose at step 40"
    rows = records(out / "episodes.jsonl")
    assert rows and info["counts"]["episodes"] == len(rows)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    path = out / "episodes.jsonl"
    command = app_command("yaml_app.py", "+recorder=core", "forever=true", f"hydra.run.dir={out}")
    proc = subprocess.Popen(command, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (path.exists() and path.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no record within 60 s"
            time.sleep(0.05)
        proc.send_signal(signum)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    info = manifest(out)
    assert info["status"] == "interrupted"
    rows = records(path)
    assert rows and [row["seq"] for row in rows] == list(range(len(rows)))
    # the signal may land between a batch's write and its count
    assert 0 < info["counts"]["episodes"] <= len(rows)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["+recorder.terms.bad={func: my_pkg.metrics:no_such_term}"],
            ["config key recorder.terms.bad", "no attribute 'no_such_term'"],
        ),
        (
            ["+recorder.terms.bad={func: no_such_pkg.metrics:final_x}"],
            ["config key recorder.terms.bad", "cannot import 'no_such_pkg.metrics'"],
        ),
        (
            ["+recorder.terms.final_x={func: my_pkg.metrics:final_x, params: {axes: 0}}"],
            ["config key recorder.terms.final_x", "params ['axes'] do not fit"],
        ),
        (
            ["+recorder.terms.final_x={func: my_pkg.metrics:final_x, enabld: false}"],
            ["config key recorder.terms.final_x", "enabld"],
        ),
        (
            ["variations.gravity.sampler.low=20"],
            ["config key variations.gravity", "low 20 must be <= high 12.0"],
        ),
        (
            ["variations.gravity.sampler.type=unifrom"],
            ["config key variations.gravity.sampler.type", "'unifrom' is not one of [uniform,"],
        ),
        (
            ["+variations.gravity.scope=sometimes"],
            ["config key variations.gravity.scope", "'sometimes' is not one of [build,"],
        ),
        (
            ["++variations={cube.mass: {sampler: {type: uniform, low: 5, high: 1}}}"],
            ["config key variations.cube.mass.sampler.low", "low 5 must be <= high 1"],
        ),
        (
            ["+variations.gravity.scoep=build"],
            ["config key variations.gravity.scoep", "unknown key"],
        ),
        (
            ["+variations.gravity.sampler.hgih=3"],
            ["config key variations.gravity.sampler.hgih", "unknown key"],
        ),
        (
            ["+variations.gravity.sampler.p=abc"],
            ["config key variations.gravity.sampler.p", "'abc' is not a number"],
        ),
        (
            ["+variations.gravity.enabled=maybe"],
            ["config key variations.gravity.enabled", "'maybe' is not a bool"],
        ),
    ],
    ids=[
        "unknown-func",
        "unknown-module",
        "params",
        "term-key",
        "bounds",
        "type",
        "scope",
        "dotted-key",
        "variation-key",
        "sampler-key",
        "value-type",
        "bool-type",
    ],
)
def test_errors_stop_the_job_before_its_task(
    tmp_path: Path, overrides: list[str], expected: list[str]
) -> None:
    out = tmp_path / "run"
    proc = run_app("yaml_app.py", "+recorder=core", *overrides, f"hydra.run.dir={out}")
    assert proc.returncode != 0
    assert "TASK STARTED" not in proc.stdout
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert not (out / "manifest.json").exists() and not (out / "episodes.jsonl").exists()


def test_recorder_settings_are_typed(tmp_path: Path) -> None:
    proc = run_app("none_app.py", "+recorder=core", "recorder.fsync=maybe", "--cfg", "job")
    assert proc.returncode != 0
    assert "'maybe' is not a valid bool" in proc.stderr and "recorder.fsync" in proc.stderr
    proc = run_app("none_app.py", "+recorder=core", "recorder.fsinc=true", "--cfg", "job")
    assert proc.returncode != 0 and "fsinc" in proc.stderr
