"""Data quality: what in a recording cannot be taken as it is, said in plain words.

``load`` runs every check and keeps the findings in ``Recording.warnings`` (empty when all is
well): records lost or repeated (gaps and duplicates in each writer's ``seq``; a finished
manifest's count says where the file should end), episode identities recorded twice (a
repeated ``(run_id, episode_id)``), jobs that did not complete or recorded
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
        numbers = seq.dropna().to_numpy(dtype=np.int64)
        end = max(int(numbers.max()) + 1, expected.get((run_id, rank), 0))
        counts = np.bincount(numbers[numbers >= 0], minlength=end)  # O(n), also at 10^7
        repeated = np.flatnonzero(counts > 1)
        if len(repeated):
            extra = int((counts[repeated] - 1).sum())
            problems.append(
                f"{where}: {extra} duplicate record(s) (seq {_ranges(repeated.tolist())})"
            )
        missing = np.flatnonzero(counts == 0)
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
        "(record them with the variations term: +recorder=default)"
    ]


def choice_warnings(factor: Factor, count: int, found: Sequence[object]) -> list[str]:
    """``count`` recorded values of a categorical factor that are not among its declared
    choices (``found``: some of them), which became missing."""
    if not count:
        return []
    sample = sorted(map(str, found))[:5]
    return [
        f"{factor.column}: {count} value(s) not among the manifest's choices ({', '.join(sample)})"
    ]


def identity_warnings(episodes: pd.DataFrame) -> list[str]:
    """Episode identities that repeat: the same ``(run_id, episode_id)`` recorded twice (a
    resume or a rebind that restarted the numbering) is the same episode counted twice."""
    if episodes.empty or not {"run_id", "episode_id"} <= set(episodes.columns):
        return []
    keys = episodes[["run_id", "episode_id"]]
    repeated = keys.duplicated(keep="first")
    if not repeated.any():
        return []
    problems = []
    for run_id, ids in keys[repeated].groupby("run_id", sort=False)["episode_id"]:
        unique = np.unique(ids.to_numpy(dtype=np.int64))
        problems.append(
            f"run {str(run_id)[:8]}: {len(ids)} record(s) repeat an episode identity "
            f"(run_id, episode_id) already recorded (episode_id {_ranges(unique.tolist())})"
        )
    return problems


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
