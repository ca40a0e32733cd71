"""Data quality: what in a recording cannot be taken as it is, said in plain words.

``load`` runs every check and keeps the findings in ``Recording.warnings`` (empty when all is
well): records lost or repeated (gaps and duplicates in each writer's ``seq``; a finished
manifest's count says where the file should end), jobs that did not complete or recorded
nothing, torn lines skipped while reading, values outside their factor's hard bounds or not
among its choices, and factors declared but not recorded.

Example::

    rec = load("multirun/2026-01-01/12-00-00")
    for warning in rec.warnings:
        print("warning:", warning)   # "job 1 (1): status failed: RuntimeError: boom"
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from arena_recording.analysis.factors import Factor
from arena_recording.analysis.sweeps import JobRecording
from arena_recording.core.format import Manifest


def _ranges(values: Sequence[int], limit: int = 5) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (the first ``limit`` ranges)."""
    groups = [
        [v for _, v in group]
        for _, group in itertools.groupby(enumerate(values), lambda p: p[1] - p[0])
    ]
    parts = [f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups[:limit]]
    return ", ".join(parts) + (", ..." if len(groups) > limit else "")


def job_warnings(job: JobRecording, label: str) -> list[str]:
    """A job that recorded nothing, or whose recording did not complete."""
    if not job.manifests:
        return [f"{label}: nothing recorded (no manifest)"]
    if job.status != "completed":
        error = f": {job.error}" if job.error else ""
        return [f"{label}: status {job.status}{error}"]
    return []


def torn_warnings(label: str, torn: int) -> list[str]:
    """Lines skipped because they were cut short or unreadable."""
    return [f"{label}: skipped {torn} incomplete or unreadable line(s)"] if torn else []


def seq_warnings(episodes: pd.DataFrame, manifests: Sequence[Manifest] = ()) -> list[str]:
    """Gaps and duplicates in ``seq`` per (run_id, rank): lost or repeated records.

    A writer numbers its lines 0, 1, 2...; a finished manifest's episode count gives the
    number the file should end at, so records lost at the end are found too.
    """
    if episodes.empty:
        return []
    if not {"run_id", "rank", "seq"} <= set(episodes.columns):
        return ["records have no run_id, rank and seq: loss and duplication cannot be checked"]
    expected = {(m.run_id, m.rank): m.counts.episodes for m in manifests if m.finished}
    known = {(m.run_id, m.rank) for m in manifests}
    problems = []
    for (run_id, rank), seq in episodes.groupby(["run_id", "rank"], sort=False)["seq"]:
        where = f"run {str(run_id)[:8]} rank {rank}"
        if manifests and (run_id, rank) not in known:
            problems.append(f"{where}: {len(seq)} records that no manifest describes")
        counts = seq.value_counts()
        repeated = sorted(int(s) for s in counts[counts > 1].index)
        if repeated:
            extra = int((counts[counts > 1] - 1).sum())
            problems.append(f"{where}: {extra} duplicate record(s) (seq {_ranges(repeated)})")
        end = max(int(seq.max()) + 1, expected.get((run_id, rank), 0))
        missing = np.setdiff1d(np.arange(end), seq.to_numpy(dtype=np.int64))
        if len(missing):
            problems.append(
                f"{where}: {len(missing)} missing record(s) (seq {_ranges(missing.tolist())})"
            )
    return problems


def missing_factor_warnings(missing: Sequence[str]) -> list[str]:
    """Factors the manifest declares whose values the records do not hold."""
    if not missing:
        return []
    return [
        f"factors in the manifest but not in the records: {', '.join(missing)} "
        "(record them with the variations term: '+recorder=[core,variations]')"
    ]


def choice_warnings(factor: Factor, recorded: pd.Series, typed: pd.Series) -> list[str]:
    """Recorded values of a categorical factor that are not among its declared choices
    (``recorded`` as read, ``typed`` as categories, where such values became missing)."""
    unknown = recorded.notna() & typed.isna()
    if not unknown.any():
        return []
    sample = sorted(map(str, recorded[unknown].unique()))[:5]
    return [
        f"{factor.column}: {int(unknown.sum())} value(s) not among the manifest's choices "
        f"({', '.join(sample)})"
    ]


def bound_warnings(episodes: pd.DataFrame, factors: Sequence[Factor]) -> list[str]:
    """Values of numeric factors outside their hard bounds (a float32 rounding is allowed)."""
    problems = []
    for factor in factors:
        if factor.categorical or factor.scope == "interval" or factor.column not in episodes:
            continue
        if not factor.hard or factor.low is None or factor.high is None:
            continue
        values = episodes[factor.column]
        tol = 1e-6 * max(abs(factor.low), abs(factor.high), 1.0)  # values pass through float32
        outside = (values < factor.low - tol) | (values > factor.high + tol)
        if outside.any():
            problems.append(
                f"{factor.column}: {int(outside.sum())} value(s) outside the manifest's bounds "
                f"[{factor.low:g}, {factor.high:g}]"
            )
    return problems
