"""hydra-zen apps in subprocesses: an app built with ``zen`` and ``store`` and the same app run
through ``launch`` record with ``+recorder=...`` and fail like the YAML app; a custom term
declared with ``builds`` has its params checked against the function's signature while Hydra
composes, and typed variations fail while composing with the config path in the message."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra_apps.runner import manifest, records, run_app

APPS = ["zen_app.py", "launch_app.py"]


@pytest.mark.parametrize("app", APPS)
def test_records_with_the_default_recorder_and_a_builds_term(tmp_path: Path, app: str) -> None:
    out = tmp_path / "run"
    proc = run_app(
        app,
        "+recorder=default",
        "+recorder/terms=final_x",
        "recorder.terms.final_x.func.axis=2",
        "seed=3",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = records(out / "episodes.jsonl")
    assert rows and all(8.0 <= row["variations"]["gravity"] <= 12.0 for row in rows)
    assert all(row["seed"] == 3 and isinstance(row["final_x"], float) for row in rows)
    info = manifest(out)
    assert info["status"] == "completed"
    assert list(info["terms"]) == ["core", "variations", "final_x"]
    assert info["terms"]["final_x"] == {"func": "my_pkg.metrics:final_x", "params": {"axis": 2}}
    assert [f["key"] for f in info["factors"]] == ["gravity"]


@pytest.mark.parametrize("app", APPS)
def test_recording_is_opt_in(tmp_path: Path, app: str) -> None:
    out = tmp_path / "run"
    proc = run_app(app, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "TASK STARTED" in proc.stdout and not (out / "manifest.json").exists()


@pytest.mark.parametrize("app", APPS)
def test_failing_task_is_recorded_as_failed(tmp_path: Path, app: str) -> None:
    out = tmp_path / "run"
    proc = run_app(app, "+recorder=default", "fail_at=40", f"hydra.run.dir={out}")
    assert proc.returncode != 0 and "task failed on purpose" in proc.stderr
    info = manifest(out)
    assert info["status"] == "failed"
    assert info["error"] == "RuntimeError: task failed on purpose at step 40"


COMPOSE_ERRORS = [
    (  # a term param that is not in the function's signature
        ["+recorder/terms=final_x", "recorder.terms.final_x.func.axes=1"],
        ["Key 'axes' not in", "recorder.terms.final_x.func.axes"],
    ),
    (  # a term param of the wrong type (final_x's axis is an int)
        ["+recorder/terms=final_x", "recorder.terms.final_x.func.axis=abc"],
        ["could not be converted to Integer", "recorder.terms.final_x.func.axis"],
    ),
    (  # a dotted variation key with a bad sampler type
        ["++variations={cube.mass: {sampler: {type: unifrom}}}"],
        ["Invalid value 'unifrom'", "variations.cube.mass.sampler.type"],
    ),
    (  # a misspelled sampler field and a misspelled variation field
        ["variations.gravity.sampler.hgih=3"],
        ["Key 'hgih' not in", "variations.gravity.sampler.hgih"],
    ),
    (
        ["variations.gravity.scoep=build"],
        ["Key 'scoep' not in", "variations.gravity.scoep"],
    ),
    (  # wrong value types
        ["variations.gravity.sampler.p=abc"],
        ["could not be converted to Float", "variations.gravity.sampler.p"],
    ),
    (
        ["variations.gravity.enabled=maybe"],
        ["'maybe' is not a valid bool", "variations.gravity.enabled"],
    ),
    (
        ["recorder.terms.core.enabld=false"],
        ["Key 'enabld' not in", "recorder.terms.core.enabld"],
    ),
]


ERROR_IDS = ["term-param", "term-param-type", "dotted-key", "sampler-key"]
ERROR_IDS += ["variation-key", "float", "bool", "term-key"]


@pytest.mark.parametrize(
    ("app", "overrides", "expected"),
    [
        pytest.param(app, overrides, expected, id=f"{name}-{app}")
        for app in [*APPS, "dataclass_app.py"]
        for name, (overrides, expected) in zip(ERROR_IDS, COMPOSE_ERRORS, strict=True)
        # the dataclass app stores no custom term to misconfigure
        if not (app == "dataclass_app.py" and "+recorder/terms=final_x" in overrides)
    ],
)
def test_compose_time_errors_name_the_config_path(
    tmp_path: Path, app: str, overrides: list[str], expected: list[str]
) -> None:
    out = tmp_path / "run"
    proc = run_app(app, "+recorder=default", *overrides, f"hydra.run.dir={out}")
    assert proc.returncode != 0
    assert "TASK STARTED" not in proc.stdout
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert not out.exists() or not list(out.iterdir())
