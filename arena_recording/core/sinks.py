"""Sinks: the append-only JSON Lines file of records, and the atomically replaced manifest.

The records file is only ever appended to, one write and one flush per reset batch (plus one
fsync when asked), so a hard kill loses at most the batch being written. A torn last line left
by such a kill is cut off when the file is reopened; readers skip one anyway.

Example::

    with JsonlSink(Path("out/episodes.jsonl")) as sink:
        sink.write(['{"seq": 0}'])
    write_json_atomic(Path("out/manifest.json"), {"status": "completed"})
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

log = logging.getLogger(__name__)


class JsonlSink:
    """Appends lines to ``path``; ``seq`` counts the lines this writer has written."""

    def __init__(self, path: Path, *, fsync: bool = False, start_seq: int = 0) -> None:
        self.path = path
        self.fsync = fsync
        self.seq = start_seq
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _repair(self) -> None:
        """Cut a torn last line (a write interrupted by a hard kill) off an existing file."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            end = size
            while end > 0:
                f.seek(max(0, end - 65536))
                chunk = f.read(end - max(0, end - 65536))
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    end = max(0, end - len(chunk)) + newline + 1
                    break
                end = max(0, end - len(chunk))
            if end < size:
                log.warning("%s: dropping a torn last line of %d bytes", self.path, size - end)
                f.truncate(end)

    def write(self, lines: list[str]) -> None:
        """Append ``lines`` (without newlines) in one write, then flush."""
        if not lines:
            return
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.seq += len(lines)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into a unique temp file beside it, fsync it and
    rename it over ``path``: readers see the old file or the new one, never half of one, even
    when several processes write it at once."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, written atomically (see ``write_atomic``)."""
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2, default=str) + "\n"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
