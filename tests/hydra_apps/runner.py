"""Run the test apps as real subprocesses and read what they wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

APPS = Path(__file__).parent


def app_env() -> dict[str, str]:
    """The environment of an app: ``my_pkg`` and the apps importable, no inherited Hydra knobs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "ARENA_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS), env.get("PYTHONPATH")]))
    return env


def app_command(app: str, *overrides: str) -> list[str]:
    return [sys.executable, str(APPS / app), *overrides]


def run_app(app: str, *overrides: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``app`` with ``overrides``; stdout and stderr are captured as text."""
    return subprocess.run(
        app_command(app, *overrides),
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a records file, parsed (json.loads fails on a damaged one)."""
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.split("\n") if line]


def manifest(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "manifest.json").read_text())
