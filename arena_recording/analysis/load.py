"""Loading: a run dir, a sweep dir or one records file into a typed episode frame.

``load`` reads the files through the format's reader (``arena_recording.core.format``) into a
DataFrame with a row per episode. Factor columns are typed from the manifest, never guessed
from values: ``variations.<key>`` for scalars, ``variations.<key>[i]`` per vector component,
categoricals as pandas ``Categorical`` in the manifest's order, booleans as ``boolean``,
interval-scope factors as recorded (lists of ``{"step", "value"}``). Sweeps add the job's
number, dir and status and its overrides as ``override.<key>`` columns. The data-quality
checks (``arena_recording.analysis.quality``) run on the way; their findings are the
recording's ``warnings``.

Example::

    rec = load("outputs/2026-01-01/12-00-00")   # or a sweep dir, or an episodes.jsonl
    print(rec.episodes[["success", "variations.speed"]].describe(), rec.warnings)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from arena_recording.analysis import quality
from arena_recording.analysis.factors import PREFIX, Factor, factors_from_manifests, hashable
from arena_recording.analysis.sweeps import (
    JOB_COLUMNS,
    JobRecording,
    SweepTable,
    find_jobs,
    flatten,
    sweep_rows,
)
from arena_recording.core.format import Manifest, find_manifests, read_records


@dataclass
class Recording:
    """Episodes of a run, a sweep or a records file, with their factors and warnings.

    ``episodes`` has a row per episode; ``factors`` lists the factor columns present in it;
    ``warnings`` are data-quality findings in plain words (empty when all is well).
    """

    path: Path
    kind: Literal["run", "sweep", "file"]
    episodes: pd.DataFrame
    factors: list[Factor]
    warnings: list[str]
    manifests: list[Manifest]
    jobs: list[JobRecording] = field(default_factory=list)

    def factor(self, column: str) -> Factor:
        """The factor of ``column`` (``variations.speed``), or a KeyError listing the factors."""
        for factor in self.factors:
            if factor.column == column or factor.key == column:
                return factor
        raise KeyError(f"no factor {column!r}; factors: {[f.column for f in self.factors]}")


def _read_jobs(root: Path, jobs: list[JobRecording]) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for job in jobs:
        label = job.label(root)
        problems.extend(quality.job_warnings(job, label))
        if not job.manifests:
            continue
        part = SweepTable(root, [job])
        rows.extend(sweep_rows(part))
        problems.extend(quality.torn_warnings(label, part.torn_lines))
    return rows, problems


def _vector_columns(values: pd.Series, factors: list[Factor]) -> dict[str, pd.Series]:
    width = len(factors)
    rows = [v if isinstance(v, list) and len(v) == width else [math.nan] * width for v in values]
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    return {f.column: pd.Series(matrix[:, i], index=values.index) for i, f in enumerate(factors)}


def _typed_factor(values: pd.Series, factor: Factor, problems: list[str]) -> pd.Series:
    if factor.scope == "interval":
        return values  # lists of {"step", "value"}: kept as recorded
    if factor.kind == "boolean":
        return values.astype("boolean")
    if factor.categorical:
        hashed = values.map(hashable, na_action="ignore")
        typed = pd.Series(
            pd.Categorical(hashed, categories=list(factor.choices)), index=values.index
        )
        problems.extend(quality.choice_warnings(factor, hashed, typed))
        return typed
    return pd.to_numeric(values, errors="coerce").astype(np.float64)


def _frame(
    rows: list[dict[str, Any]], factors: list[Factor], problems: list[str]
) -> tuple[pd.DataFrame, list[Factor]]:
    """The typed frame and the factors that have columns in it."""
    raw = pd.DataFrame(rows)
    columns: dict[str, pd.Series] = {}
    present: list[Factor] = []
    by_source: dict[str, list[Factor]] = {}
    for factor in factors:
        by_source.setdefault(f"{PREFIX}{factor.key}", []).append(factor)
    if len(raw):
        missing = [source for source in by_source if source not in raw.columns]
        problems.extend(quality.missing_factor_warnings(missing))
    for name in raw.columns:
        group = by_source.get(name)
        if group is None:
            columns[name] = raw[name]
        elif group[0].column != name:  # vector components
            components = _vector_columns(raw[name], group)
            columns.update(
                {f.column: _typed_factor(components[f.column], f, problems) for f in group}
            )
            present.extend(group)
        else:
            columns[name] = _typed_factor(raw[name], group[0], problems)
            present.append(group[0])
    frame = pd.DataFrame(columns, index=raw.index)
    for name in ("success", "terminated", "truncated"):
        if name in frame:
            frame[name] = frame[name].astype("boolean")
    for name in ("start_time", "end_time"):
        if name in frame:
            frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
    return frame, present


def _manifests_beside(path: Path) -> list[Manifest]:
    return [m for _, m in find_manifests(path.parent) if m.records == path.name]


def load(path: str | os.PathLike[str]) -> Recording:
    """Load a run dir, a sweep dir or one records file (``episodes.jsonl``).

    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` for a dir without
    recordings, and ``arena_recording.core.format.FormatError`` for files of a newer schema.
    """
    path = Path(path).absolute()
    if path.is_file():
        manifests = _manifests_beside(path)
        records, torn = read_records(path)
        rows = [flatten(record) for record in records]
        problems = quality.torn_warnings(path.name, torn)
        if not manifests:
            problems.append(
                f"no manifest beside {path.name}: factor kinds and bounds are unknown, so factor "
                "columns stay as recorded and cannot be analysed"
            )
        jobs: list[JobRecording] = []
        kind: Literal["run", "sweep", "file"] = "file"
    elif path.is_dir():
        jobs = find_jobs(path)
        own = [job for job in jobs if job.dir == path]
        kind = "run" if own and own[0].manifests else "sweep"
        jobs = own if kind == "run" else jobs
        if not any(job.manifests for job in jobs):
            raise ValueError(f"no recording under {path} (no manifest.json found)")
        manifests = [m for job in jobs for m in job.manifests]
        rows, problems = _read_jobs(path, jobs)
    else:
        raise FileNotFoundError(f"{path} does not exist")
    factors, merge_problems = factors_from_manifests(manifests)
    problems.extend(merge_problems)
    episodes, present = _frame(rows, factors, problems)
    problems.extend(quality.bound_warnings(episodes, present))
    if kind == "run":
        episodes = episodes.drop(
            columns=[c for c in episodes if c in JOB_COLUMNS or c.startswith("override.")]
        )
    problems.extend(quality.seq_warnings(episodes, manifests))
    return Recording(path, kind, episodes, present, problems, manifests, jobs)
