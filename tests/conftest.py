"""Shared fixtures: recorder configs, a demo runner and a reader for the files a session writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CORE_AND_VARIATIONS = {
    "terms": {
        "core": {"func": "arena_recording.core.terms:core"},
        "variations": {"func": "arena_recording.core.terms:variations"},
    }
}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a records file, parsed."""
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def run_in_triton_interpreter(script: str) -> str:
    """Run ``script`` in a fresh interpreter with ``TRITON_INTERPRET=1`` (Triton kernels run
    on the CPU); its stdout, after asserting it succeeded."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_demo(module: str, *overrides: str, cwd: Path) -> str:
    """Run a demo app (``python -m module overrides...``) in ``cwd``; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def recorder_cfg() -> dict[str, Any]:
    return json.loads(json.dumps(CORE_AND_VARIATIONS))
