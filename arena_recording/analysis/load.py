"""Analysis: load recordings into pandas and rank factors by their effect on an outcome.

``load`` reads a run dir, a sweep dir (one job dir per job) or a single records file into a
DataFrame with a row per episode. Factor columns are typed from the manifest, never guessed
from values: ``variations.<key>`` for scalars, ``variations.<key>[i]`` per vector component,
categoricals as pandas ``Categorical`` in the manifest's order, booleans as ``boolean``,
interval-scope factors as recorded (lists of ``{"step", "value"}``). Sweeps add the job's
number, dir and status and its overrides as ``override.<key>`` columns. Partial last lines are
skipped; gaps and duplicates in ``seq``, jobs that did not complete and values outside their
declared bounds come back as warnings.

``sensitivity`` ranks the factors by their effect on an outcome (``success`` or any numeric
column) with SALib's given-data methods: PAWN, RBD-FAST and delta's first-order index. Seeded
random *dummy* factors go through the same estimators: they show how large an index gets from
noise alone at this number of episodes, which is what separates "no effect" from "small
effect".

Example::

    rec = load("outputs/2026-01-01/12-00-00")   # or a sweep dir, or an episodes.jsonl
    print(rec.episodes[["success", "variations.speed"]].describe(), rec.warnings)
    result = sensitivity(rec, outcome="success")
    print(result.to_text())
    print(result.summary())
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import pandas as pd

from arena_recording.analysis.sweeps import (
    JOB_COLUMNS,
    JobRecording,
    SweepTable,
    find_jobs,
    flatten,
    parse_override,
    read_records,
    sweep_rows,
)

CONF_LEVEL = 0.95
METHODS = ("pawn", "rbd_fast", "delta")
METHOD_NAMES = {"pawn": "PAWN", "rbd_fast": "RBD-FAST S1", "delta": "delta S1"}
DUMMY = "(dummy)"
MIN_EPISODES = 30
PAWN_SLICES = 10  # PAWN's conditioning intervals per factor (SALib's default)
NORMAL_SPAN = 3.0  # an untruncated normal's bounds: mean -/+ this many standard deviations
_ENDED = ("terminated", "truncated")


# factors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """One factor column with the type and bounds its manifest declares.

    ``low``/``high`` are the sampler's bounds (for an untruncated normal, mean -/+ 3 std, which
    ``note`` says; ``hard`` is then false: values may lie beyond them); ``choices`` are the
    categories of a categorical or boolean factor.
    """

    column: str
    key: str
    kind: str
    distribution: str
    scope: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    hard: bool = True
    note: str = ""

    @property
    def categorical(self) -> bool:
        return self.kind in ("categorical", "boolean")

    @property
    def excluded(self) -> str | None:
        """Why a sensitivity analysis cannot use this factor, or ``None``."""
        if self.scope == "interval":
            return "is drawn several times per episode (interval scope)"
        if self.categorical:
            return None if len(self.choices) > 1 else "has a single choice"
        if self.low is None or self.high is None:
            return "has no bounds in the manifest"
        if self.distribution == "constant" or self.low == self.high:
            return "is constant"
        return None


def _hashable(value: Any) -> Any:
    """Choices that are lists or mappings become their JSON text, so they can be categories."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _component(value: Any, index: int) -> Any:
    return value[index] if isinstance(value, list) else value


def _bounds(schema: Mapping[str, Any], index: int) -> dict[str, Any]:
    """``low``, ``high`` and, where they are not the sampler's own, ``hard`` and ``note``, of
    one component of the manifest's factor schema."""
    distribution = schema.get("distribution")
    if distribution == "constant":
        value = float(_component(schema["value"], index))
        return {"low": value, "high": value}
    low, high = _component(schema.get("low"), index), _component(schema.get("high"), index)
    if distribution != "normal":
        return {
            "low": None if low is None else float(low),
            "high": None if high is None else float(high),
        }
    mean, std = float(_component(schema["mean"], index)), float(_component(schema["std"], index))
    missing = [side for side, bound in (("low", low), ("high", high)) if bound is None]
    low = mean - NORMAL_SPAN * std if low is None else float(low)
    high = mean + NORMAL_SPAN * std if high is None else float(high)
    if not missing:
        return {"low": low, "high": high}
    note = (
        f"normal without {' or '.join(missing)} truncation: bounds taken as "
        f"mean -/+ {NORMAL_SPAN:g} std = [{low:.4g}, {high:.4g}]"
    )
    return {"low": low, "high": high, "hard": False, "note": note}


def factors_from_schema(schema: Mapping[str, Any]) -> list[Factor]:
    """The factor columns of one manifest factor schema (one per vector component)."""
    key, kind = schema["key"], schema.get("kind", "continuous")
    common = {
        "key": key,
        "kind": kind,
        "distribution": schema.get("distribution", ""),
        "scope": schema.get("scope", "episode"),
    }
    column = f"variations.{key}"
    if kind == "categorical":
        return [Factor(column, choices=tuple(map(_hashable, schema["choices"])), **common)]
    if kind == "boolean":
        return [Factor(column, choices=(False, True), **common)]
    shape = tuple(schema.get("shape") or ())
    factors = []
    for flat, index in enumerate(np.ndindex(*shape)):
        name = f"{column}[{','.join(map(str, index))}]" if shape else column
        factors.append(Factor(name, **_bounds(schema, flat), **common))
    return factors


def _merge_factor(versions: list[Factor]) -> tuple[Factor, str | None]:
    """One factor from the jobs of a sweep: choices and bounds are pooled, which ``note`` says
    for bounds; a second value is a warning (kinds that differ)."""
    first = versions[0]
    if all(v == first for v in versions):
        return first, None
    kinds = sorted({v.kind for v in versions})
    if len(kinds) > 1:
        return first, f"{first.column}: kinds differ between jobs {kinds}; read as {first.kind}"
    if first.categorical:
        choices = tuple(dict.fromkeys(itertools.chain.from_iterable(v.choices for v in versions)))
        return replace(first, choices=choices), None
    lows = [v.low for v in versions if v.low is not None]
    highs = [v.high for v in versions if v.high is not None]
    low, high = (min(lows), max(highs)) if lows and highs else (None, None)
    distributions = sorted({v.distribution for v in versions})
    notes = [v.note for v in versions if v.note]
    notes.append(
        f"bounds differ between jobs ({', '.join(distributions)}); pooled: [{low}, {high}]"
    )
    merged = replace(
        first,
        low=low,
        high=high,
        hard=all(v.hard for v in versions),
        distribution=distributions[0] if len(distributions) == 1 else "mixed",
        note="; ".join(dict.fromkeys(notes)),
    )
    return merged, None


def factors_from_manifests(
    manifests: Sequence[Mapping[str, Any]],
) -> tuple[list[Factor], list[str]]:
    """Every enabled factor of the manifests (in declaration order) and merge warnings."""
    versions: dict[str, list[Factor]] = {}
    for manifest in manifests:
        for schema in manifest.get("factors") or []:
            if schema.get("enabled", True):
                for factor in factors_from_schema(schema):
                    versions.setdefault(factor.column, []).append(factor)
    factors, problems = [], []
    for column_versions in versions.values():
        factor, problem = _merge_factor(column_versions)
        factors.append(factor)
        if problem:
            problems.append(problem)
    return factors, problems


# loading -------------------------------------------------------------------------------------


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
    manifests: list[dict[str, Any]]
    jobs: list[JobRecording] = field(default_factory=list)

    def factor(self, column: str) -> Factor:
        """The factor of ``column`` (``variations.speed``), or a KeyError listing the factors."""
        for factor in self.factors:
            if factor.column == column or factor.key == column:
                return factor
        raise KeyError(f"no factor {column!r}; factors: {[f.column for f in self.factors]}")


def _job_label(job: JobRecording, root: Path) -> str:
    if job.dir == root:
        return "run"
    where = str(job.dir.relative_to(root))
    return f"job {job.num} ({where})" if job.num is not None else where


def _read_jobs(root: Path, jobs: list[JobRecording]) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for job in jobs:
        label = _job_label(job, root)
        if not job.manifests:
            problems.append(f"{label}: nothing recorded (no manifest)")
            continue
        if job.status != "completed":
            error = f": {job.error}" if job.error else ""
            problems.append(f"{label}: status {job.status}{error}")
        part = SweepTable(root, [job])
        rows.extend(sweep_rows(part))
        if part.torn_lines:
            problems.append(f"{label}: skipped {part.torn_lines} incomplete or unreadable line(s)")
    return rows, problems


def _ranges(values: Sequence[int], limit: int = 5) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (the first ``limit`` ranges)."""
    groups = [
        [v for _, v in group]
        for _, group in itertools.groupby(enumerate(values), lambda p: p[1] - p[0])
    ]
    parts = [f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups[:limit]]
    return ", ".join(parts) + (", ..." if len(groups) > limit else "")


def seq_warnings(episodes: pd.DataFrame, manifests: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Gaps and duplicates in ``seq`` per (run_id, rank): lost or repeated records.

    A writer numbers its lines 0, 1, 2...; a finished manifest's episode count gives the
    number the file should end at, so records lost at the end are found too.
    """
    if episodes.empty:
        return []
    if not {"run_id", "rank", "seq"} <= set(episodes.columns):
        return ["records have no run_id, rank and seq: loss and duplication cannot be checked"]
    expected = {
        (m.get("run_id"), m.get("rank", 0)): int((m.get("counts") or {}).get("episodes", 0))
        for m in manifests
        if m.get("status") in ("completed", "failed", "interrupted")
    }
    known = {(m.get("run_id"), m.get("rank", 0)) for m in manifests}
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
        hashed = values.map(_hashable, na_action="ignore")
        typed = pd.Series(
            pd.Categorical(hashed, categories=list(factor.choices)), index=values.index
        )
        unknown = hashed.notna() & typed.isna()
        if unknown.any():
            sample = sorted(map(str, hashed[unknown].unique()))[:5]
            problems.append(
                f"{factor.column}: {int(unknown.sum())} value(s) not among the manifest's "
                f"choices ({', '.join(sample)})"
            )
        return typed
    typed = pd.to_numeric(values, errors="coerce").astype(np.float64)
    if factor.hard and factor.low is not None and factor.high is not None:
        tol = 1e-6 * max(abs(factor.low), abs(factor.high), 1.0)  # values pass through float32
        outside = (typed < factor.low - tol) | (typed > factor.high + tol)
        if outside.any():
            problems.append(
                f"{factor.column}: {int(outside.sum())} value(s) outside the manifest's bounds "
                f"[{factor.low:g}, {factor.high:g}]"
            )
    return typed


def _frame(
    rows: list[dict[str, Any]], factors: list[Factor], problems: list[str]
) -> tuple[pd.DataFrame, list[Factor]]:
    """The typed frame and the factors that have columns in it."""
    raw = pd.DataFrame(rows)
    columns: dict[str, pd.Series] = {}
    present: list[Factor] = []
    by_source: dict[str, list[Factor]] = {}
    for factor in factors:
        by_source.setdefault(f"variations.{factor.key}", []).append(factor)
    missing = [source for source in by_source if source not in raw.columns]
    if missing and len(raw):
        problems.append(
            f"factors in the manifest but not in the records: {', '.join(missing)} "
            "(record them with the variations term: '+recorder=[core,variations]')"
        )
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


def _manifests_beside(path: Path) -> list[dict[str, Any]]:
    manifests = []
    for candidate in sorted(path.parent.glob("manifest*.json")):
        manifest = json.loads(candidate.read_text())
        if manifest.get("records", "episodes.jsonl") == path.name:
            manifests.append(manifest)
    return manifests


def load(path: str | os.PathLike[str]) -> Recording:
    """Load a run dir, a sweep dir or one records file (``episodes.jsonl``).

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a dir without
    recordings.
    """
    path = Path(path).absolute()
    if path.is_file():
        manifests = _manifests_beside(path)
        records, torn = read_records(path)
        rows = [flatten(record) for record in records]
        problems = [f"{path.name}: skipped {torn} incomplete or unreadable line(s)"] if torn else []
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
    if kind == "run":
        episodes = episodes.drop(
            columns=[c for c in episodes if c in JOB_COLUMNS or c.startswith("override.")]
        )
    problems.extend(seq_warnings(episodes, manifests))
    return Recording(path, kind, episodes, present, problems, manifests, jobs)


# outcome rates -------------------------------------------------------------------------------


def ended(episodes: pd.DataFrame) -> pd.DataFrame:
    """Episodes that ended (terminated or truncated); aborted ones say nothing of outcomes."""
    if "status" not in episodes:
        return episodes
    return episodes[episodes["status"].isin(_ENDED)]


def _z(conf_level: float) -> float:
    return NormalDist().inv_cdf(0.5 + conf_level / 2)


def wilson(successes: int, n: int, conf_level: float = CONF_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a success rate: sound near 0 and 1 and for small ``n``."""
    if n == 0:
        return math.nan, math.nan
    z = _z(conf_level)
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
    values = [dict(map(parse_override, job.overrides)) for job in jobs]
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
            label = _job_label(job, rec.path)
            overrides = dict(map(parse_override, job.overrides))
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


def _codes(values: pd.Series) -> np.ndarray:
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
        index = _codes(data[factor.column]).astype(np.int64)
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
            half = _z(conf_level) * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
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


# sensitivity ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _salib(seed: int, notes: list[str]) -> Iterator[None]:
    """Run SALib code reproducibly and quietly, whatever its version.

    SALib draws from numpy's global generator, and its ``seed`` arguments skip ``0`` (``if
    seed:``) in some estimators and make a ``Generator`` in others: the global generator is
    seeded here and restored afterwards. SALib 1.6's delta also resets the warning filters of
    the whole process: warnings are captured here instead, and become notes.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        np.random.set_state(state)
        notes.extend(f"SALib: {w.message}" for w in caught)


def _bootstrap(
    index: Callable[[np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    num_resamples: int,
    conf_level: float,
    seed: int,
) -> np.ndarray:
    """Half-width of a normal bootstrap interval (SALib's own convention for ``*_conf``)."""
    rng = np.random.default_rng(seed)
    n = len(Y)
    draws = [index(X[rows], Y[rows]) for rows in rng.integers(0, n, (num_resamples, n))]
    return _z(conf_level) * np.nanstd(np.asarray(draws), axis=0, ddof=1)


@dataclass(frozen=True)
class _Design:
    problem: dict[str, Any]
    X: np.ndarray
    Y: np.ndarray
    num_resamples: int
    conf_level: float
    seed: int


def _pawn(design: _Design, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """PAWN's median KS distance over the slices; SALib gives no interval: bootstrap it."""
    from SALib.analyze import pawn

    def index(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        with _salib(design.seed, notes):
            result = pawn.analyze(design.problem, X, Y, S=PAWN_SLICES, seed=design.seed)
        return np.asarray(result["median"], dtype=np.float64)

    conf = _bootstrap(
        index, design.X, design.Y, design.num_resamples, design.conf_level, design.seed
    )
    return index(design.X, design.Y), conf


def _rbd_fast(design: _Design, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from SALib.analyze import rbd_fast

    with _salib(design.seed, notes):
        result = rbd_fast.analyze(
            design.problem,
            design.X,
            design.Y,
            M=10,
            num_resamples=design.num_resamples,
            conf_level=design.conf_level,
            seed=design.seed,
        )
    return (
        np.asarray(result["S1"], dtype=np.float64),
        np.asarray(result["S1_conf"], dtype=np.float64),
    )


def _delta(design: _Design, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """delta's first-order index only: its delta index needs a density of the outcome, which
    a success flag does not have (and the key it is returned under changed in SALib 1.6)."""
    from SALib.analyze import delta

    with _salib(design.seed, notes):
        result = delta.analyze(
            design.problem,
            design.X,
            design.Y,
            num_resamples=design.num_resamples,
            conf_level=design.conf_level,
            method="sobol",
            seed=design.seed,
        )
    return (
        np.asarray(result["S1"], dtype=np.float64),
        np.asarray(result["S1_conf"], dtype=np.float64),
    )


_ESTIMATORS: dict[str, Callable[[_Design, list[str]], tuple[np.ndarray, np.ndarray]]] = {
    "pawn": _pawn,
    "rbd_fast": _rbd_fast,
    "delta": _delta,
}


def _salib_version() -> str:
    try:
        return metadata.version("SALib")
    except metadata.PackageNotFoundError:
        raise ImportError(
            "sensitivity analysis needs SALib: pip install 'arena-recording[analysis]'"
        ) from None


@dataclass
class Sensitivity:
    """Factor ranking for one outcome.

    ``table`` has a row per factor, best first: ``rank``, per method its index and the
    half-width of its confidence interval (``pawn``, ``pawn_conf``, ``rbd_fast``...), and
    ``effect``: ``clear`` (every method's interval lies above the dummy factor's index),
    ``uncertain`` (some methods') or ``none detected``. ``dummy`` holds the dummy's indices.
    """

    outcome: str
    episodes: int
    methods: tuple[str, ...]
    table: pd.DataFrame
    dummy: dict[str, float]
    conf_level: float
    num_resamples: int
    salib_version: str
    notes: list[str]
    rate: Rate | None = None

    def _names(self, effect: str) -> list[str]:
        return [_short(c) for c in self.table.index[self.table["effect"] == effect]]

    def summary(self) -> str:
        """The ranking in plain words, with what it rests on."""
        if self.rate is None:
            lines = [f"{self.outcome} over {self.episodes} episodes."]
        else:
            lines = [f"Success rate {self.rate}."]
        clear, uncertain, none = map(self._names, ("clear", "uncertain", "none detected"))
        if clear:
            strongest = self.table.index[0]
            order = " (strongest first" if len(clear) > 1 else " ("
            lines.append(
                f"Clear effect on {self.outcome}: {_join(clear)}{order}; {_short(strongest)}: "
                + ", ".join(
                    f"{METHOD_NAMES[m]} {self.table.at[strongest, m]:.2f}" for m in self.methods
                )
                + ")."
            )
        if uncertain:
            lines.append(
                f"Uncertain: {_join(uncertain)} (above the noise level for some methods only; "
                "more episodes would settle it)."
            )
        if none:
            lines.append(
                f"No effect detected: {_join(none)} (no larger than a random dummy factor's "
                "indices, the noise level at this number of episodes)."
            )
        firsts = {m: self.table[m].idxmax() for m in self.methods if self.table[m].notna().any()}
        if len(set(firsts.values())) > 1:
            lines.append(
                "The methods disagree on the strongest factor: "
                + ", ".join(f"{METHOD_NAMES[m]} says {_short(c)}" for m, c in firsts.items())
                + "."
            )
        lines.append(
            f"Ranked by the mean of the {len(self.methods)} methods' ranks; "
            f"{self.conf_level:.0%} intervals from {self.num_resamples} bootstrap resamples. "
            "PAWN compares whole outcome distributions; the S1 indices count only the variance "
            "a factor explains alone, so an effect that acts through interactions shows in "
            "PAWN more than in S1."
        )
        return "\n".join(lines)

    def rows(self) -> list[list[str]]:
        """The ranking as text cells: a header, a row per factor, the dummy's noise level."""
        rows = [["rank", "factor", *(METHOD_NAMES[m] for m in self.methods), "effect"]]
        for column, row in self.table.iterrows():
            cells = [
                f"{row[m]:.3f} ± {row[f'{m}_conf']:.3f}" if np.isfinite(row[m]) else "n/a"
                for m in self.methods
            ]
            rows.append([str(int(row["rank"])), _short(column), *cells, row["effect"]])
        rows.append(["", DUMMY, *(f"{self.dummy[m]:.3f}" for m in self.methods), "noise level"])
        return rows

    def to_text(self) -> str:
        """The ranking as an aligned text table."""
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the ranking, the dummy's indices, notes and the summary."""
        factors = [
            {
                "factor": column,
                "rank": int(row["rank"]),
                "effect": row["effect"],
                **{m: _number(row[m]) for m in self.methods},
                **{f"{m}_conf": _number(row[f"{m}_conf"]) for m in self.methods},
            }
            for column, row in self.table.iterrows()
        ]
        return {
            "outcome": self.outcome,
            "episodes": self.episodes,
            "methods": list(self.methods),
            "conf_level": self.conf_level,
            "num_resamples": self.num_resamples,
            "salib_version": self.salib_version,
            "success_rate": None
            if self.rate is None
            else {
                "rate": self.rate.rate,
                "successes": self.rate.successes,
                "episodes": self.rate.episodes,
                "ci_low": self.rate.low,
                "ci_high": self.rate.high,
            },
            "factors": factors,
            "dummy": {m: _number(v) for m, v in self.dummy.items()},
            "notes": self.notes,
            "summary": self.summary(),
        }


def _short(column: str) -> str:
    return column.removeprefix("variations.")


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _number(value: Any) -> float | None:
    return float(value) if np.isfinite(value) else None


def _inputs(
    data: pd.DataFrame, factors: list[Factor], rng: np.random.Generator
) -> tuple[np.ndarray, list[list[float]]]:
    """The input matrix and its bounds. Categories enter as their codes spread uniformly over
    ``[code, code + 1)``, so that slicing and sorting estimators see ordered bins."""
    columns, bounds = [], []
    for factor in factors:
        values = data[factor.column]
        if factor.categorical:
            codes = _codes(values)
            columns.append(codes + rng.uniform(size=len(codes)))
            bounds.append([0.0, float(len(factor.choices))])
        else:
            columns.append(values.to_numpy(dtype=np.float64))
            bounds.append([factor.low, factor.high])
    return np.column_stack(columns), bounds


def _outcome(data: pd.DataFrame, outcome: str) -> pd.Series:
    if outcome not in data:
        numeric = [c for c in data if pd.api.types.is_numeric_dtype(data[c])]
        raise ValueError(f"no column {outcome!r}; numeric columns: {numeric}")
    values = data[outcome]
    if values.dtype == "boolean" or values.dtype == bool:
        return values.astype("Float64").astype(np.float64)
    if not pd.api.types.is_numeric_dtype(values):
        raise ValueError(f"outcome {outcome!r} is not numeric ({values.dtype})")
    return values.astype(np.float64)


def sensitivity(
    rec: Recording,
    outcome: str = "success",
    *,
    methods: Sequence[str] = METHODS,
    num_resamples: int = 100,
    conf_level: float = CONF_LEVEL,
    seed: int = 0,
    dummies: int = 3,
    max_episodes: int = 20_000,
) -> Sensitivity:
    """Rank ``rec``'s factors by their effect on ``outcome`` (ended episodes only).

    Bounds come from the manifest. Factors drawn several times per episode (interval scope) or
    held constant are left out, which ``notes`` says. Beyond ``max_episodes`` a seeded random
    subset is analysed (the bootstrap is the cost). Raises ``ValueError`` when there is nothing
    to rank: no usable factor, too few episodes, or an outcome that never varies.
    """
    unknown = sorted(set(methods) - set(_ESTIMATORS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(_ESTIMATORS)}")
    version = _salib_version()
    notes: list[str] = []
    factors = []
    for factor in rec.factors:
        if factor.excluded:
            notes.append(f"{_short(factor.column)} left out: it {factor.excluded}")
        else:
            factors.append(factor)
            if factor.note:
                notes.append(f"{_short(factor.column)}: {factor.note}")
    if not factors:
        raise ValueError(f"no factor to analyse in {rec.path} (factors come from manifest.json)")
    data = ended(rec.episodes)
    if len(data) < len(rec.episodes):
        notes.append(f"{len(rec.episodes) - len(data)} aborted episode(s) left out")
    y = _outcome(data, outcome)
    usable = y.notna() & data[[f.column for f in factors]].notna().all(axis=1)
    if not usable.all():
        notes.append(
            f"{int((~usable).sum())} episode(s) without {outcome} or a factor value left out"
        )
    data, y = data[usable], y[usable]
    rng = np.random.default_rng(seed)
    if len(data) > max_episodes:
        keep = np.sort(rng.choice(len(data), max_episodes, replace=False))
        data, y = data.iloc[keep], y.iloc[keep]
        notes.append(f"analysed a random subset of {max_episodes} episodes")
    if len(data) < MIN_EPISODES:
        raise ValueError(f"{len(data)} usable episodes; at least {MIN_EPISODES} are needed")
    if y.nunique() < 2:
        raise ValueError(f"{outcome} is {y.iloc[0]:g} in every episode: nothing to rank")
    for factor in [f for f in factors if data[f.column].nunique() < 2]:
        factors.remove(factor)  # a build-scope draw, or a choice that came up alone
        notes.append(f"{_short(factor.column)} left out: it has one value in every episode")
    if not factors:
        raise ValueError("every factor has one value in every episode: nothing to rank")
    X, bounds = _inputs(data, factors, rng)
    X = np.column_stack([X, rng.uniform(size=(len(X), dummies))])
    bounds.extend([[0.0, 1.0]] * dummies)
    names = [f"x{i}" for i in range(X.shape[1])]  # SALib forbids some suffixes in names
    design = _Design(
        {"num_vars": len(names), "names": names, "bounds": bounds},
        X,
        y.to_numpy(),
        num_resamples,
        conf_level,
        seed,
    )
    columns: dict[str, np.ndarray] = {}
    for method in methods:
        try:
            value, conf = _ESTIMATORS[method](design, notes)
        except Exception as err:  # one failing estimator must not hide the others
            notes.append(f"{METHOD_NAMES[method]} failed: {type(err).__name__}: {err}")
            value = conf = np.full(len(names), np.nan)
        columns[method], columns[f"{method}_conf"] = value, conf
    every = pd.DataFrame(columns)
    table = every.iloc[: len(factors)].set_axis([f.column for f in factors])
    dummy = every.iloc[len(factors) :][list(methods)].mean().to_dict()
    above = pd.DataFrame(
        {m: table[m] - table[f"{m}_conf"] > dummy[m] for m in methods if np.isfinite(dummy[m])}
    )
    if above.columns.empty:
        table["effect"] = "unknown"  # no method gave the dummy's noise level
    else:
        table["effect"] = np.select(
            [above.all(axis=1), above.any(axis=1)], ["clear", "uncertain"], "none detected"
        )
    ranks = table[list(methods)].rank(ascending=False)
    table["rank"] = ranks.mean(axis=1)
    table = table.sort_values(["rank", methods[0]], ascending=[True, False])
    table["rank"] = np.arange(1, len(table) + 1)
    table = table[["rank", *columns, "effect"]]
    rate = success_rate(data) if outcome == "success" else None
    notes = list(dict.fromkeys(notes))
    return Sensitivity(
        outcome,
        len(data),
        tuple(methods),
        table,
        dummy,
        conf_level,
        num_resamples,
        version,
        notes,
        rate,
    )
