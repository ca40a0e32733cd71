"""Sweep tables: every episode recorded by the jobs of a Hydra sweep, in one table.

Each job of a multirun records into its own job dir. ``merge_sweep`` reads every job's
manifest and records and writes, into the sweep dir:

- ``sweep_episodes/``: a Parquet dataset, one file per job (``job-0000.parquet``...), all
  with one schema: the job's number, dir and status, its overrides as ``override.<key>``
  columns, then the record's columns flattened (``variations.gravity``). Any Parquet reader
  opens it without this package::

      pd.read_parquet("sweep_episodes")
      pl.read_parquet("sweep_episodes/*.parquet")
      duckdb.sql("SELECT job_num, avg(success::INT) FROM 'sweep_episodes/*.parquet' GROUP BY 1")

- ``sweep_episodes.csv``: the same rows for a spreadsheet, for sweeps of up to
  ``CSV_MAX_EPISODES`` episodes (or any size when pyarrow is not installed);
- ``sweep_jobs.csv``: a row per job (status, error, episode count), including jobs that failed
  before their recording started.

The recorder callback runs it when a multirun ends, but Hydra skips that when a job failed, so
it is also a command::

    arena-recording merge multirun/2026-01-01/12-00-00

or, from Python::

    table = merge_sweep("multirun/2026-01-01/12-00-00")
    print(table.episodes, table.paths)

A torn last line (a job killed mid-write) is skipped and counted, never parsed. Manifests that
other tools wrote under the same name are not ours and are left out.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena_recording.core.format import Manifest, find_manifests, read_records
from arena_recording.core.sinks import write_atomic

log = logging.getLogger(__name__)

EPISODES_DATASET = "sweep_episodes"
CSV_MAX_EPISODES = 100_000  # beyond this the CSV table is not written: the dataset is the table
EPISODES_CSV = "sweep_episodes.csv"
EPISODES_JSONL = "sweep_episodes.jsonl"
JOBS_CSV = "sweep_jobs.csv"
JOB_COLUMNS = ("job_num", "job_dir", "job_status")


@dataclass
class JobRecording:
    """One job dir of a sweep: its manifests (one per rank) and Hydra overrides."""

    dir: Path
    manifests: list[Manifest]
    overrides: list[str]
    num: int | None

    @property
    def status(self) -> str:
        """The worst status of its ranks, or ``not recorded``."""
        statuses = {m.status for m in self.manifests}
        for status in ("failed", "interrupted", "running", "completed", "created"):
            if status in statuses:
                return status
        return "not recorded"

    @property
    def error(self) -> str | None:
        return next((m.error for m in self.manifests if m.error), None)

    @property
    def override_values(self) -> dict[str, Any]:
        """The overrides parsed: key to value (``seed=3`` -> ``{"seed": 3}``)."""
        return dict(map(parse_override, self.overrides))

    def label(self, root: Path) -> str:
        """How warnings and tables name it: ``job 3 (3)``, or ``run`` for the run dir itself."""
        if self.dir == root:
            return "run"
        where = str(self.dir.relative_to(root))
        return f"job {self.num} ({where})" if self.num is not None else where

    @property
    def episodes(self) -> int:
        """The episodes its manifests count."""
        return sum(m.counts.episodes for m in self.manifests)


@dataclass
class SweepTable:
    """What ``merge_sweep`` found and wrote."""

    sweep_dir: Path
    jobs: list[JobRecording]
    episodes: int = 0
    torn_lines: int = 0
    paths: list[Path] = field(default_factory=list)


def parse_override(override: str) -> tuple[str, Any]:
    """``+a.b=1`` -> ``("a.b", 1)``; values that are not JSON stay strings (``core``)."""
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _job_num(manifests: list[Manifest], job_dir: Path) -> int | None:
    for manifest in manifests:
        if manifest.job.num is not None:
            return manifest.job.num
    return int(job_dir.name) if job_dir.name.isdigit() else None


def _hydra_overrides(job_dir: Path) -> list[str] | None:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path))]


def find_jobs(sweep_dir: str | os.PathLike[str]) -> list[JobRecording]:
    """Every job dir under ``sweep_dir``: dirs with a manifest of ours or a Hydra ``.hydra``
    dir."""
    root = Path(sweep_dir)
    dirs: dict[Path, list[Manifest]] = {}
    for path in sorted({root, *(p for p in root.rglob("*") if p.is_dir())}):
        relative = path.relative_to(root).parts
        if any(part.startswith(".") for part in relative[:-1]):
            continue  # .submitit, .hydra: not job dirs
        if path.name == ".hydra" and path.parent != root:
            dirs.setdefault(path.parent, [])
        elif not relative or not relative[-1].startswith("."):
            manifests = [manifest for _, manifest in find_manifests(path)]
            if manifests:
                dirs.setdefault(path, []).extend(manifests)
    jobs = []
    for job_dir, manifests in dirs.items():
        overrides = next((m.job.overrides for m in manifests if m.job.overrides), None)
        if overrides is None:
            overrides = _hydra_overrides(job_dir) or []
        jobs.append(JobRecording(job_dir, manifests, list(overrides), _job_num(manifests, job_dir)))
    jobs.sort(key=lambda j: (j.num is None, j.num or 0, str(j.dir)))
    return jobs


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted columns; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def sweep_rows(table: SweepTable) -> Iterator[dict[str, Any]]:
    """A flat row per episode of every job in ``table`` (counts torn lines on the way)."""
    for job in table.jobs:
        head: dict[str, Any] = {
            "job_num": job.num,
            "job_dir": str(job.dir.relative_to(table.sweep_dir)),
            "job_status": job.status,
        }
        for override in job.overrides:
            key, value = parse_override(override)
            head[f"override.{key}"] = value
        for manifest in job.manifests:
            records, torn = read_records(job.dir / manifest.records)
            table.torn_lines += torn
            for record in records:
                table.episodes += 1
                yield {**head, **flatten(record)}


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(JOB_COLUMNS)
    overrides: dict[str, None] = {}
    rest: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key in seen:
                continue
            (overrides if key.startswith("override.") else rest).setdefault(key, None)
    return [*seen, *overrides, *rest]


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})

    write_atomic(path, write)


def _write_dataset(table: SweepTable, out: Path) -> Path | None:
    """The sweep's episodes as a Parquet dataset: one file per job (``job-0003.parquet``),
    one schema across the files (a column a job lacks is null there)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from arena_recording.analysis.columnar import concat, job_columns, job_table

    recorded = [job for job in table.jobs if job.manifests]
    heads = job_columns(table.sweep_dir, recorded)
    schemas = []
    for job in recorded:  # first pass: the schema only; one job in memory at a time
        part, torn = job_table(table.sweep_dir, job, heads[job.dir])
        schemas.append(part.schema)
        table.episodes += part.num_rows
        table.torn_lines += torn
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column of numbers in one job, text in another
        schema = concat([s.empty_table() for s in schemas]).schema
    target = out / EPISODES_DATASET
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{EPISODES_DATASET}."))
    try:
        for i, job in enumerate(recorded):
            part, _ = job_table(table.sweep_dir, job, heads[job.dir])
            part = concat([schema.empty_table(), part]).select(schema.names).cast(schema)
            name = f"job-{job.num if job.num is not None else i:04d}.parquet"
            pq.write_table(part, staging / name, compression="zstd")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=out, prefix=f".{EPISODES_DATASET}.old."))
            target.rename(old / EPISODES_DATASET)
        staging.rename(target)  # readers see the old dataset or the new one
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def merge_sweep(
    sweep_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    formats: Iterable[str] = ("parquet", "csv"),
) -> SweepTable:
    """Write the sweep tables into ``out_dir`` (default: the sweep dir).

    ``parquet``: the dataset ``sweep_episodes/`` (needs pyarrow; skipped with a log line
    without it); ``csv``: ``sweep_episodes.csv``, for sweeps of up to ``CSV_MAX_EPISODES``
    episodes when the dataset is written, any size without pyarrow; ``jsonl``:
    ``sweep_episodes.jsonl``, on request only. ``sweep_jobs.csv`` is always written. Writes
    nothing when no job of the sweep recorded (a sweep of an app without a recorder).
    """
    root = Path(sweep_dir).absolute()
    table = SweepTable(root, find_jobs(root))
    if not any(job.manifests for job in table.jobs):
        return table
    out = Path(out_dir).absolute() if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    formats = set(formats)
    dataset = None
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            log.info("sweep Parquet dataset not written: pyarrow is not installed")
        else:
            dataset = _write_dataset(table, out)
            table.paths.append(dataset)
    small = dataset is None or table.episodes <= CSV_MAX_EPISODES
    if "csv" in formats and not small:
        log.info(
            "%s not written: %d episodes (more than %d); read %s instead",
            EPISODES_CSV,
            table.episodes,
            CSV_MAX_EPISODES,
            dataset,
        )
    if ("csv" in formats and small) or "jsonl" in formats:
        counted = table if dataset is None else SweepTable(root, table.jobs)
        rows = list(sweep_rows(counted))
        if "csv" in formats and small:
            _write_csv(out / EPISODES_CSV, _columns(rows), rows)
            table.paths.append(out / EPISODES_CSV)
        if "jsonl" in formats:

            def write_jsonl(f: Any) -> None:
                for row in rows:
                    f.write(json.dumps(row) + "\n")

            write_atomic(out / EPISODES_JSONL, write_jsonl)
            table.paths.append(out / EPISODES_JSONL)
    job_rows = [
        {
            "job_num": job.num,
            "job_dir": str(job.dir.relative_to(root)),
            "job_status": job.status,
            "episodes": job.episodes,
            "error": job.error,
            "overrides": " ".join(job.overrides),
        }
        for job in table.jobs
    ]
    _write_csv(out / JOBS_CSV, list(job_rows[0]), job_rows)
    table.paths.append(out / JOBS_CSV)
    return table
