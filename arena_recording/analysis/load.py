"""Loading: a run dir, a sweep dir or one records file into a typed episode frame.

``load`` reads every record through the columnar reader (``arena_recording.analysis.columnar``:
a run's compacted Parquet file when it is current, else its JSONL, typed by the manifest) into
a DataFrame with a row per episode; ``columns`` keeps only what an analysis needs. Factor columns are typed from the manifest, never guessed
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

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from arena_recording.analysis import quality
from arena_recording.analysis.columnar import (
    concat,
    job_columns,
    job_table,
    read_table,
    selected,
)
from arena_recording.analysis.factors import Factor, factors_from_manifests, hashable
from arena_recording.analysis.sweeps import JOB_COLUMNS, JobRecording, find_jobs
from arena_recording.core.format import IDENTITY_FIELDS, Manifest, find_manifests


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


def _source(column: str) -> str:
    """The recorded column of a factor column: ``variations.offset[1]`` -> ``variations.offset``."""
    return column.split("[", 1)[0]


_DEFAULT_STRING = pd.Series(["text"]).dtype
_ARROW_TYPES: dict[pa.DataType, Any] = {pa.bool_(): pd.BooleanDtype()}
if isinstance(_DEFAULT_STRING, pd.api.extensions.ExtensionDtype):
    # pandas' own string dtype wraps the Arrow strings (no Python objects in between: 10x faster)
    _ARROW_TYPES |= {pa.string(): _DEFAULT_STRING, pa.large_string(): _DEFAULT_STRING}


def _plain(values: pa.ChunkedArray) -> pd.Series:
    """A column that is not a factor: booleans as ``boolean``, lists as Python lists."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return pd.Series(values.to_pylist(), dtype=object)
    return values.to_pandas(types_mapper=_ARROW_TYPES.get)


def _floats(values: pa.ChunkedArray) -> np.ndarray:
    try:
        floats = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(pd.Series(values.to_pylist()), errors="coerce").to_numpy(np.float64)
    return floats.to_numpy(zero_copy_only=False)


def _vector_columns(values: pa.ChunkedArray, factors: list[Factor]) -> dict[str, np.ndarray]:
    """The components of a vector factor; rows of another length are missing (NaN)."""
    width = len(factors)
    matrix = np.full((len(values), width), np.nan)
    if pa.types.is_list(values.type) and pa.types.is_floating(values.type.value_type):
        array = values.combine_chunks()
        whole = pc.fill_null(pc.equal(pc.list_value_length(array), width), False)
        rows = pc.list_flatten(array.filter(whole)).to_numpy(zero_copy_only=False)
        matrix[whole.to_numpy(zero_copy_only=False)] = rows.reshape(-1, width)
    else:
        for i, v in enumerate(values.to_pylist()):
            if isinstance(v, list) and len(v) == width:
                matrix[i] = pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(np.float64)
    return {f.column: matrix[:, i] for i, f in enumerate(factors)}


def _categories(values: pa.ChunkedArray, factor: Factor, problems: list[str]) -> pd.Categorical:
    """Categories in the manifest's order; values not among the choices become missing."""
    choices = list(factor.choices)
    values = values.combine_chunks()
    try:
        codes = pc.index_in(values, value_set=pa.array(choices, values.type))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        position = {c: i for i, c in enumerate(choices)}
        codes = pa.array([position.get(hashable(v)) for v in values.to_pylist()], pa.int32())
    unknown = pc.and_(pc.is_valid(values), pc.is_null(codes))
    count = int(pc.sum(unknown).as_py() or 0)
    if count:
        found = pc.unique(values.filter(unknown)).slice(0, 100).to_pylist()
        problems.extend(quality.choice_warnings(factor, count, [hashable(v) for v in found]))
    codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False)
    return pd.Categorical.from_codes(codes, categories=choices)


def _typed_factor(values: pa.ChunkedArray, factor: Factor, problems: list[str]) -> Any:
    if factor.scope == "interval":
        return pd.Series(values.to_pylist(), dtype=object)  # lists of {"step", "value"}
    if factor.kind == "boolean":
        if pa.types.is_boolean(values.type):
            return _plain(values)
        return pd.Series(values.to_pylist(), dtype=object).astype("boolean")
    if factor.categorical:
        return _categories(values, factor, problems)
    return _floats(values)


def _frame(
    table: pa.Table, factors: list[Factor], problems: list[str], wanted: set[str] | None
) -> tuple[pd.DataFrame, list[Factor]]:
    """The typed frame of a flat table and the factors that have columns in it."""
    by_source: dict[str, list[Factor]] = {}
    for factor in factors:
        if selected(factor.column, wanted) or selected(_source(factor.column), wanted):
            by_source.setdefault(_source(factor.column), []).append(factor)
    if table.num_rows:
        missing = [source for source in by_source if source not in table.column_names]
        problems.extend(quality.missing_factor_warnings(missing))
    columns: dict[str, Any] = {}
    present: list[Factor] = []
    for name in table.column_names:
        values = table[name]
        group = by_source.get(name)
        if group is None:
            columns[name] = _plain(values)
        elif group[0].column != name:  # vector components
            components = _vector_columns(values, group)
            columns.update(components)
            present.extend(group)
        else:
            columns[name] = _typed_factor(values, group[0], problems)
            present.append(group[0])
    frame = pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))
    return frame, [f for f in factors if f in present]


def _manifests_beside(path: Path) -> list[Manifest]:
    return [m for _, m in find_manifests(path.parent) if m.records == path.name]


def _wanted(columns: Collection[str] | None) -> set[str] | None:
    """The recorded columns to read: those asked for, their sources, and those the checks use."""
    if columns is None:
        return None
    return {*columns, *(_source(c) for c in columns), *IDENTITY_FIELDS, "status", *JOB_COLUMNS}


def load(path: str | os.PathLike[str], columns: Collection[str] | None = None) -> Recording:
    """Load a run dir, a sweep dir or one records file (``episodes.jsonl``).

    Every record is read (a compacted Parquet file when it is current, else the JSONL);
    ``columns`` (``["success", "variations.speed"]``, or ``["success", "variations.*"]`` for
    every factor) keeps only those columns (plus the identity and status, which the checks
    use): what a big recording needs to be analysed.
    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` for a dir without
    recordings, and ``arena_recording.core.format.FormatError`` for files of a newer schema.
    """
    path = Path(path).absolute()
    wanted = _wanted(columns)
    if path.is_file():
        manifests = _manifests_beside(path)
        table, torn = read_table(path, manifests[0].factors if manifests else (), wanted)
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
        heads = job_columns(path, [job for job in jobs if job.manifests])
        tables, problems = [], []
        for job in jobs:
            label = job.label(path)
            problems.extend(quality.job_warnings(job, label))
            if job.manifests:
                head = heads[job.dir] if kind == "sweep" else None
                table, torn = job_table(path, job, head, wanted)
                tables.append(table)
                problems.extend(quality.torn_warnings(label, torn))
        table = concat(tables)
    else:
        raise FileNotFoundError(f"{path} does not exist")
    factors, merge_problems = factors_from_manifests(manifests)
    problems.extend(merge_problems)
    episodes, present = _frame(table, factors, problems, wanted)
    del table
    problems.extend(quality.bound_warnings(episodes, present))
    problems.extend(quality.seq_warnings(episodes, manifests))
    problems.extend(quality.identity_warnings(episodes))
    return Recording(path, kind, episodes, present, problems, manifests, jobs)
