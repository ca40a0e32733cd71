"""Compaction: a run's JSONL records rewritten as a Parquet file beside them, for fast loading.

JSONL stays the live, crash-safe format: lines are appended while the run goes, and a kill
loses at most the line being written. Parsing text is what makes loading a big run slow, so at
finish the session rewrites the records as ``episodes.parquet`` (typed, flat columns;
``episodes.rank{N}.parquet`` per rank), written to a temp file and renamed into place so a
reader never sees half of one. Readers take it instead of the JSONL while it covers the whole
JSONL (``arena_recording.analysis.columnar.current_parquet``); the JSONL is kept.

A run that crashed before its finish is compacted by hand (every records file of a run or sweep
dir)::

    arena-recording compact outputs/2026-01-01/12-00-00

This module imports nothing heavy at the top: the session calls ``compact_finished`` at finish,
which logs and skips when pyarrow (the analysis extra) is not installed.

Example::

    for path in compact_dir("multirun/2026-01-01/12-00-00"):
        print(path)   # .../0/episodes.parquet, .../1/episodes.parquet
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from arena_recording.core.format import FactorSchema, find_manifests, read_manifest
from arena_recording.core.sinks import write_atomic

log = logging.getLogger(__name__)


def compact(records: Path, factors: Sequence[FactorSchema] = ()) -> Path | None:
    """Write ``records`` (a JSONL file) as the Parquet file beside it, atomically; ``None``
    when there is nothing to write (no file, or no complete record)."""
    import pyarrow.parquet as pq

    from arena_recording.analysis.columnar import METADATA_KEY, parquet_path, read_jsonl

    records = Path(records)
    table, torn, size = read_jsonl(records, factors)
    if not table.num_rows:
        return None
    source = {"source": records.name, "source_bytes": size, "torn": torn, "rows": table.num_rows}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(source).encode()})
    out = parquet_path(records)
    # the text file write_atomic opens is flushed empty; Parquet goes to its binary buffer
    write_atomic(out, lambda f: pq.write_table(table, f.buffer, compression="zstd"))
    return out


def compact_dir(path: str | os.PathLike[str]) -> list[Path]:
    """Compact every records file of a run dir, a sweep dir (each job) or one records file."""
    from arena_recording.analysis.sweeps import find_jobs

    path = Path(path).absolute()
    if path.is_file():
        manifests = [m for _, m in find_manifests(path.parent) if m.records == path.name]
        factors = manifests[0].factors if manifests else []
        return [p for p in [compact(path, factors)] if p is not None]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    written = []
    for job in find_jobs(path):
        for manifest in job.manifests:
            out = compact(job.dir / manifest.records, manifest.factors)
            if out is not None:
                written.append(out)
    return written


def compact_finished(manifest_path: Path) -> Path | None:
    """The session's call at finish: compact the run's records; never raises (the recording
    stands without its Parquet file, and ``arena-recording compact`` can write it later)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        log.info(
            "arena-recording: records not compacted to Parquet: pyarrow is not installed "
            "(pip install 'arena-recording[analysis]')"
        )
        return None
    try:
        manifest = read_manifest(Path(manifest_path))
        out = compact(Path(manifest_path).parent / manifest.records, manifest.factors)
    except Exception as err:  # noqa: BLE001 - a missing Parquet file never fails a finished run
        log.warning("arena-recording: could not compact %s: %s", manifest_path, err)
        return None
    if out is not None:
        log.info("arena-recording: records compacted to %s", out)
    return out
