"""Shared fixtures: recorder configs and a reader for the files a session writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CORE_AND_VARIATIONS = {
    "terms": {
        "core": {"func": "arena_recording.terms:core"},
        "variations": {"func": "arena_recording.terms:variations"},
    }
}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a records file, parsed."""
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def recorder_cfg() -> dict[str, Any]:
    return json.loads(json.dumps(CORE_AND_VARIATIONS))
