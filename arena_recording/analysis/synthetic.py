"""Synthetic recordings with known effects, written fast: for benchmarks and known-answer tests.

``write_synthetic_run`` writes a run dir as the recorder would (``manifest.json`` and
``episodes.jsonl`` through the recorder's own line encoder), without an env: five factors drawn
with numpy, of which ``speed`` and ``friction`` drive success strongly, ``mass`` weakly, and
``colour`` and ``light`` not at all. A million episodes take a few seconds.

Example::

    run = write_synthetic_run(tmp_dir / "run", episodes=100_000, seed=0)
    rec = load(run)   # rec.episodes has 100,000 rows and 5 factor columns
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arena_recording.core.encoding import encode_lines
from arena_recording.core.format import (
    Counts,
    EnvInfo,
    FactorSchema,
    JobInfo,
    Manifest,
    manifest_name,
    records_name,
)
from arena_recording.core.sinks import write_json_atomic

COLOURS = ("red", "green", "blue")
FACTORS = (
    FactorSchema("speed", "continuous", "uniform", low=(0.5,), high=(2.0,), bounds="hard"),
    FactorSchema("friction", "continuous", "uniform", low=(0.1,), high=(0.6,), bounds="hard"),
    FactorSchema("mass", "continuous", "log_uniform", low=(0.5,), high=(5.0,), bounds="hard"),
    FactorSchema("colour", "categorical", "choice", choices=COLOURS),
    FactorSchema("light", "continuous", "normal", low=(0.0,), high=(2.0,), bounds="soft"),
)
_CHUNK = 200_000


def _chunk(
    rng: np.random.Generator, start: int, n: int, run_id: str, num_envs: int
) -> tuple[bytes, int]:
    """``n`` records from episode ``start`` on, and how many of them succeeded."""
    speed = rng.uniform(0.5, 2.0, n)
    friction = rng.uniform(0.1, 0.6, n)
    mass = np.exp(rng.uniform(np.log(0.5), np.log(5.0), n))
    colour = np.asarray(COLOURS, dtype=object)[rng.integers(0, 3, n)]
    light = rng.normal(1.0, 1 / 3, n)
    logit = 3.0 - 2.5 * speed - 6.0 * (friction - 0.35) + 0.15 * np.log(mass)
    success = rng.random(n) < 1 / (1 + np.exp(-logit))
    truncated = success
    length = np.where(truncated, 500, rng.integers(5, 500, n))
    episode = np.arange(start, start + n)
    stamp = "2026-01-01T00:00:00.000000+00:00"
    columns = {
        "schema_version": 2,
        "run_id": run_id,
        "rank": 0,
        "seq": episode,
        "episode_id": episode,
        "env_id": episode % num_envs,
        "episode_in_env": episode // num_envs,
        "status": np.where(truncated, "truncated", "terminated").astype(object),
        "success": success,
        "terminated": ~truncated,
        "truncated": truncated,
        "termination": np.where(truncated, "time_out", "fell").astype(object),
        "length": length,
        "start_time": stamp,
        "end_time": stamp,
        "seed": 0,
        "variations": {
            "speed": speed,
            "friction": friction,
            "mass": mass,
            "colour": colour,
            "light": light,
        },
    }
    return encode_lines(columns, n), int(success.sum())


def write_synthetic_run(
    run_dir: str | os.PathLike[str],
    episodes: int,
    seed: int = 0,
    num_envs: int = 4096,
    job: JobInfo | None = None,
) -> Path:
    """A completed run of ``episodes`` episodes with the five ``FACTORS`` in ``run_dir``
    (``job``: the Hydra job it stands for, in a sweep)."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    run_id = rng.bytes(16).hex()
    successes = 0
    with open(out / records_name(), "wb") as f:
        for start in range(0, episodes, _CHUNK):
            lines, k = _chunk(rng, start, min(_CHUNK, episodes - start), run_id, num_envs)
            f.write(lines)
            successes += k
    manifest = Manifest(
        run_id=run_id,
        status="completed",
        records=records_name(),
        envs=[EnvInfo(num_envs, "cpu", seed)],
        job=job or JobInfo(),
        factors=list(FACTORS),
        counts=Counts(
            episodes=episodes,
            terminated=episodes - successes,
            truncated=successes,
            success=successes,
        ),
    )
    write_json_atomic(out / manifest_name(), manifest.to_dict())
    return out
