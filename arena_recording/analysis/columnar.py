"""Columnar reading: a records file into an Arrow table of typed, flat columns.

Records are parsed by pyarrow's JSON reader against an explicit schema: the record fields the
format defines (``IDENTITY_FIELDS`` and the ``core`` term's) and one type per factor from the
manifest's ``FactorSchema`` (a float per continuous component, a list of floats per vector, the
choices' type for a categorical); columns nobody declared (custom terms) are inferred. Nested
records become dotted columns (``variations.speed``). Only the bytes up to the last newline are
parsed: a torn last line (a write cut short by a kill) is counted, never trusted. A file the
fast reader refuses (a corrupt line inside, a value of another type than declared) is read
through the format's line reader instead, with the same result for every complete line.

A compacted records file (``episodes.parquet`` beside ``episodes.jsonl``, see
``arena_recording.analysis.compact``) is read instead of the JSONL when it covers the whole JSONL:
its metadata holds the JSONL's size when it was written, and the JSONL must not have changed
since.

Example::

    table, torn = read_table(Path("run/episodes.jsonl"), manifest.factors, columns=["success"])
    print(table.num_rows, table.column_names)   # 1000000 ['schema_version', ..., 'success']
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from arena_recording.analysis.sweeps import JobRecording, flatten
from arena_recording.core.format import (
    PRODUCER,
    SCHEMA_VERSION,
    FactorSchema,
    FormatError,
    read_records,
)

log = logging.getLogger(__name__)

METADATA_KEY = b"arena_recording"
BLOCK_BYTES = 1 << 24  # the JSON reader's block: the unit of streaming and of parallel parsing
_TIME = pa.timestamp("us", tz="UTC")
RECORD_TYPES: dict[str, pa.DataType] = {
    "schema_version": pa.int64(),
    "run_id": pa.string(),
    "rank": pa.int64(),
    "seq": pa.int64(),
    "episode_id": pa.int64(),
    "env_id": pa.int64(),
    "episode_in_env": pa.int64(),
    "status": pa.string(),
    "success": pa.bool_(),
    "terminated": pa.bool_(),
    "truncated": pa.bool_(),
    "termination": pa.string(),
    "length": pa.int64(),
    "start_time": _TIME,
    "end_time": _TIME,
    "seed": pa.int64(),
}
ALWAYS = ("schema_version",)  # read whatever the projection: newer files are refused


def parquet_path(records: Path) -> Path:
    """``episodes.parquet`` beside ``episodes.jsonl`` (``episodes.rank1.parquet`` per rank)."""
    return Path(records).with_suffix(".parquet")


def _choice_type(choices: Sequence[Any]) -> pa.DataType | None:
    if not choices:
        return None
    if all(isinstance(c, bool) for c in choices):
        return pa.bool_()
    if all(isinstance(c, str) for c in choices):
        return pa.string()
    if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return pa.int64()
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
        return pa.float64()
    return None  # lists, mappings or mixed kinds: inferred, compared as JSON text


def factor_type(schema: FactorSchema) -> pa.DataType | None:
    """The Arrow type of a factor's recorded value, or ``None`` to leave it to inference."""
    if schema.scope == "interval":
        return None  # lists of {"step", "value"}
    if schema.kind == "boolean":
        return pa.bool_()
    if schema.categorical:
        return _choice_type(schema.choices or ())
    if len(schema.shape) == 0:
        return pa.float64()
    if len(schema.shape) == 1:
        return pa.list_(pa.float64())
    return None


def record_schema(factors: Sequence[FactorSchema]) -> pa.Schema:
    """The explicit (nested) schema of a records file whose manifest declares ``factors``."""
    fields = [pa.field(name, type_) for name, type_ in RECORD_TYPES.items()]
    declared = []
    for factor in factors:
        type_ = factor_type(factor)
        if type_ is not None and factor.enabled:
            declared.append(pa.field(factor.key, type_))
    if declared:
        fields.append(pa.field("variations", pa.struct(declared)))
    return pa.schema(fields)


def flatten_table(table: pa.Table) -> pa.Table:
    """Struct columns become dotted columns, recursively (``variations.speed``)."""
    while any(pa.types.is_struct(f.type) and f.type.num_fields for f in table.schema):
        table = table.flatten()
    return table


def selected(name: str, columns: Collection[str] | None) -> bool:
    """Whether column ``name`` is among ``columns`` (``None``: all; ``variations.*``: every
    column under ``variations.``)."""
    if columns is None or name in columns or name in ALWAYS:
        return True
    return any(c.endswith("*") and name.startswith(c[:-1]) for c in columns)


def _project(table: pa.Table, columns: Collection[str] | None) -> pa.Table:
    if columns is None:
        return table
    return table.select([name for name in table.column_names if selected(name, columns)])


class _Head(io.RawIOBase):
    """The first ``end`` bytes of a file: the complete lines, without a torn tail."""

    def __init__(self, path: Path, end: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed with this reader
        self._left = end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        n = self._file.readinto(view)
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def complete_bytes(path: Path) -> tuple[int, int]:
    """The file's size and the offset just after its last newline (where a torn tail starts)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            chunk = f.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return size, start + newline + 1
            end = start
    return size, 0


def _fast(
    path: Path, end: int, size: int, schema: pa.Schema, columns: Collection[str] | None
) -> pa.Table:
    """Stream the complete lines through pyarrow's JSON reader, keeping only ``columns``."""
    source: Any = str(path) if end == size else pa.PythonFile(io.BufferedReader(_Head(path, end)))
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    if columns is None:  # everything: the multithreaded reader
        return flatten_table(pj.read_json(source, pj.ReadOptions(block_size=BLOCK_BYTES), options))
    reader = pj.open_json(source, pj.ReadOptions(block_size=BLOCK_BYTES), options)
    batches = [_project(flatten_table(pa.Table.from_batches([b])), columns) for b in reader]
    if not batches:
        return _project(flatten_table(schema.empty_table()), columns)
    return pa.concat_tables(batches, promote_options="permissive").combine_chunks()


def _arrow_column(values: pd.Series, type_: pa.DataType | None) -> pa.Array:
    """A column of parsed records as Arrow: coerced to its declared type, inferred otherwise,
    JSON text when its values mix kinds."""
    if type_ is not None and pa.types.is_floating(type_):
        return pa.array(pd.to_numeric(values, errors="coerce"), type_)
    if type_ is not None and pa.types.is_timestamp(type_):
        return pa.array(pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce"), type_)
    try:
        return pa.array(values.tolist(), type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = [
            v if v is None or isinstance(v, str) else json.dumps(v, default=str)
            for v in values.tolist()
        ]
        return pa.array(text, pa.string())


def _slow(path: Path, schema: pa.Schema, columns: Collection[str] | None) -> tuple[pa.Table, int]:
    """The format's line reader, for files the fast reader refuses."""
    records, torn = read_records(path)
    frame = pd.DataFrame([flatten(record) for record in records])
    frame = frame.astype(object).where(frame.notna(), None)
    types = {
        ".".join(name for name in names): type_
        for names, type_ in _leaf_types(schema, ())
        if type_ is not None
    }
    arrays = {
        name: _arrow_column(frame[name], types.get(name))
        for name in frame.columns
        if selected(name, columns)
    }
    return pa.table(arrays) if arrays else pa.table({}), torn


def _leaf_types(schema: pa.Schema | pa.StructType, prefix: tuple[str, ...]) -> list[Any]:
    out = []
    for f in schema:
        if pa.types.is_struct(f.type):
            out.extend(_leaf_types(f.type, (*prefix, f.name)))
        else:
            out.append(((*prefix, f.name), f.type))
    return out


def _check_version(table: pa.Table, path: Path) -> None:
    if "schema_version" in table.column_names and table.num_rows:
        newest = pc.max(table["schema_version"]).as_py()
        if newest is not None and newest > SCHEMA_VERSION:
            raise FormatError(
                f"{path} has records of schema version {newest}; this {PRODUCER} reads versions "
                f"up to {SCHEMA_VERSION}: upgrade {PRODUCER} to read it"
            )


def read_jsonl(
    path: Path, factors: Sequence[FactorSchema] = (), columns: Collection[str] | None = None
) -> tuple[pa.Table, int, int]:
    """The complete records of a JSONL file as a flat table, the torn lines skipped and the
    file size read. ``columns`` (flat names) limits what is kept, batch by batch."""
    path = Path(path)
    if not path.exists():
        return pa.table({}), 0, 0
    size, end = complete_bytes(path)
    schema = record_schema(factors)
    try:
        table, torn = _fast(path, end, size, schema, columns), int(end < size)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        log.info("%s: read line by line (%s)", path, err)
        table, torn = _slow(path, schema, columns)
    _check_version(table, path)
    return table, torn, size


def parquet_metadata(path: Path) -> dict[str, Any] | None:
    """What a compacted file says of its source (``source_bytes``, ``torn``, ``rows``), or
    ``None`` for a Parquet file we did not write."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = metadata.get(METADATA_KEY)
    return None if raw is None else json.loads(raw)


def current_parquet(records: Path) -> Path | None:
    """The compacted file of ``records`` when it is complete and up to date: written by us from
    the JSONL as it is now (same size, not older), or the JSONL is gone."""
    parquet = parquet_path(records)
    if not parquet.exists():
        return None
    meta = parquet_metadata(parquet)
    if meta is None:
        return None
    if not records.exists():
        return parquet
    stat = records.stat()
    fresh = parquet.stat().st_mtime_ns >= stat.st_mtime_ns
    return parquet if fresh and meta.get("source_bytes") == stat.st_size else None


def read_table(
    records: Path, factors: Sequence[FactorSchema] = (), columns: Collection[str] | None = None
) -> tuple[pa.Table, int]:
    """A records file as a flat table and its torn lines: from its compacted Parquet file when
    that is current (``current_parquet``), else from the JSONL."""
    parquet = current_parquet(Path(records))
    if parquet is not None:
        meta = parquet_metadata(parquet) or {}
        names = pq.read_schema(parquet).names
        wanted = None if columns is None else [n for n in names if selected(n, columns)]
        table = pq.read_table(parquet, columns=wanted)
        return table.replace_schema_metadata(None), int(meta.get("torn", 0))
    table, torn, _ = read_jsonl(records, factors, columns)
    return table, torn


# sweeps --------------------------------------------------------------------------------------


def _value_type(values: Sequence[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()  # strings; lists and mixed kinds as JSON text


def _as_type(value: Any, type_: pa.DataType) -> Any:
    if value is None or not pa.types.is_string(type_) or isinstance(value, str):
        return value
    return json.dumps(value)


def job_columns(root: Path, jobs: Sequence[JobRecording]) -> dict[Path, dict[str, pa.Scalar]]:
    """Per job dir, the columns a sweep adds to its episodes: ``job_num``, ``job_dir``,
    ``job_status`` and ``override.<key>``, one type per column across the jobs."""
    overrides = [job.override_values for job in jobs]
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    types = {k: _value_type([o.get(k) for o in overrides]) for k in keys}
    columns = {}
    for job, values in zip(jobs, overrides, strict=True):
        head = {
            "job_num": pa.scalar(job.num, pa.int64()),
            "job_dir": pa.scalar(str(job.dir.relative_to(root)), pa.string()),
            "job_status": pa.scalar(job.status, pa.string()),
        }
        for key, type_ in types.items():
            head[f"override.{key}"] = pa.scalar(_as_type(values.get(key), type_), type_)
        columns[job.dir] = head
    return columns


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables with the union of their columns (missing ones null); a column whose types cannot
    be unified (a number in one job, text in another) becomes text."""
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        types: dict[str, set[pa.DataType]] = {}
        for table in tables:
            for f in table.schema:
                types.setdefault(f.name, set()).add(f.type)
        mixed = {name for name, found in types.items() if len(found - {pa.null()}) > 1}
        return pa.concat_tables([_texts(t, mixed) for t in tables], promote_options="permissive")


def _texts(table: pa.Table, names: Collection[str]) -> pa.Table:
    for name in names:
        if name in table.column_names:
            values = table[name].to_pylist()
            text = pa.array([_as_type(v, pa.string()) for v in values], pa.string())
            table = table.set_column(table.column_names.index(name), name, text)
    return table


def job_table(
    root: Path,
    job: JobRecording,
    head: dict[str, pa.Scalar] | None,
    columns: Collection[str] | None = None,
) -> tuple[pa.Table, int]:
    """Every rank's records of one job as one table (with ``head``'s job columns in front when
    it is part of a sweep), and the torn lines skipped."""
    tables, torn = [], 0
    for manifest in job.manifests:
        table, skipped = read_table(job.dir / manifest.records, manifest.factors, columns)
        tables.append(table)
        torn += skipped
    table = concat(tables)
    if head:
        for i, (name, value) in enumerate(head.items()):
            table = table.add_column(i, name, pa.repeat(value, table.num_rows))
    return table, torn
