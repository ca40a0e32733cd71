"""Outcome rates: success rates with Wilson intervals, per job and per bin of a factor.

Only episodes that ended (terminated or truncated) say anything about an outcome; aborted ones
are left out everywhere here.

Example::

    rec = load("multirun/2026-01-01/12-00-00")
    print(success_rate(rec.episodes))            # 70.5% (361/512; 95% CI 66.4%-74.3%)
    print(job_table(rec))                        # a row per job, with what it overrode
    print(binned(rec.episodes, rec.factor("gravity")))
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from arena_recording.analysis.factors import Factor
from arena_recording.analysis.sweeps import JobRecording

if TYPE_CHECKING:
    from arena_recording.analysis.load import Recording

CONF_LEVEL = 0.95
_ENDED = ("terminated", "truncated")


def ended(episodes: pd.DataFrame) -> pd.DataFrame:
    """Episodes that ended (terminated or truncated); aborted ones say nothing of outcomes."""
    if "status" not in episodes:
        return episodes
    return episodes[episodes["status"].isin(_ENDED)]


def z_score(conf_level: float) -> float:
    """The normal quantile of a two-sided interval at ``conf_level``."""
    return NormalDist().inv_cdf(0.5 + conf_level / 2)


def wilson(successes: int, n: int, conf_level: float = CONF_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a success rate: sound near 0 and 1 and for small ``n``."""
    if n == 0:
        return math.nan, math.nan
    z = z_score(conf_level)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # clamped so that rounding never leaves p outside its own interval (at p = 0 or 1)
    return min(max(0.0, centre - half), p), max(min(1.0, centre + half), p)


@dataclass(frozen=True)
class Rate:
    """A success rate with its Wilson interval."""

    successes: int
    episodes: int
    low: float
    high: float
    conf_level: float = CONF_LEVEL

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else math.nan

    def __str__(self) -> str:
        if not self.episodes:
            return "no episodes"
        return (
            f"{self.rate:.1%} ({self.successes}/{self.episodes}; "
            f"{self.conf_level:.0%} CI {self.low:.1%}-{self.high:.1%})"
        )


def success_rate(episodes: pd.DataFrame, conf_level: float = CONF_LEVEL) -> Rate:
    """The success rate of the ended episodes that have a success value."""
    if "success" not in episodes:
        return Rate(0, 0, math.nan, math.nan, conf_level)
    success = ended(episodes)["success"].dropna()
    k, n = int(success.sum()), len(success)
    return Rate(k, n, *wilson(k, n, conf_level), conf_level)


def swept_overrides(jobs: Sequence[JobRecording]) -> list[str]:
    """The override keys whose values differ between the jobs: what the sweep varied."""
    values = [job.override_values for job in jobs]
    keys = dict.fromkeys(k for v in values for k in v)
    return [k for k in keys if len({json.dumps(v.get(k), default=str) for v in values}) > 1]


def job_table(rec: Recording, conf_level: float = CONF_LEVEL) -> pd.DataFrame:
    """A row per job: what it overrode, its status, episodes and success rate with its CI."""
    swept = swept_overrides(rec.jobs)
    rows = []
    for job in rec.jobs or [None]:
        if job is None:
            episodes, head = rec.episodes, {"job": rec.path.name, "status": "file"}
        else:
            label = job.label(rec.path)
            overrides = job.override_values
            head = {"job": label, "status": job.status} | {k: overrides.get(k) for k in swept}
            mine = rec.episodes.get("job_num")
            episodes = rec.episodes if mine is None else rec.episodes[mine == job.num]
        rate = success_rate(episodes, conf_level)
        rows.append(
            head
            | {
                "episodes": len(episodes),
                "successes": rate.successes,
                "success_rate": rate.rate,
                "ci_low": rate.low,
                "ci_high": rate.high,
            }
        )
    return pd.DataFrame(rows)


def codes(values: pd.Series) -> np.ndarray:
    """Category codes (0, 1, 2... in the manifest's order) of a categorical or boolean column."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(dtype=np.float64)
    return values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def binned(
    episodes: pd.DataFrame,
    factor: Factor,
    outcome: str = "success",
    bins: int = 10,
    conf_level: float = CONF_LEVEL,
) -> pd.DataFrame:
    """The outcome per bin of a factor: rate with Wilson CI (boolean) or mean with normal CI.

    Bins span the manifest's bounds (log-spaced for a log-uniform factor; values beyond an
    untruncated normal's bounds join the outermost bins); categorical factors get one bin per
    choice, at 0, 1, 2... Columns: ``bin`` (label), ``start``, ``stop``, ``centre``, ``n``,
    ``value``, ``low``, ``high``.
    """
    data = ended(episodes)[[factor.column, outcome]].dropna()
    log = not factor.categorical and factor.distribution == "log_uniform"
    if factor.categorical:
        labels = [str(c) for c in factor.choices]
        edges = np.arange(len(labels) + 1) - 0.5
        index = codes(data[factor.column]).astype(np.int64)
    else:
        edges = (np.geomspace if log else np.linspace)(factor.low, factor.high, bins + 1)
        labels = [f"{a:.3g}-{b:.3g}" for a, b in itertools.pairwise(edges)]
        index = np.searchsorted(edges, data[factor.column], side="right") - 1
        index = np.clip(index, 0, bins - 1)
    starts, stops = edges[:-1], edges[1:]
    centres = np.sqrt(starts * stops) if log else (starts + stops) / 2
    groups = data[outcome].groupby(
        pd.Categorical(index, categories=range(len(labels))), observed=False
    )
    boolean = data[outcome].dtype in ("boolean", bool)
    rows = []
    for (_, values), label, start, stop, centre in zip(
        groups, labels, starts, stops, centres, strict=True
    ):
        n = len(values)
        if boolean:
            k = int(values.sum())
            low, high = wilson(k, n, conf_level)
            value = k / n if n else math.nan
        else:
            value = float(values.mean()) if n else math.nan
            half = (
                z_score(conf_level) * float(values.std(ddof=1)) / math.sqrt(n)
                if n > 1
                else math.nan
            )
            low, high = value - half, value + half
        rows.append(
            {
                "bin": label,
                "start": start,
                "stop": stop,
                "centre": centre,
                "n": n,
                "value": value,
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(rows)
