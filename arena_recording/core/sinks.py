"""Sinks: the append-only JSON Lines file of records, and the atomically replaced manifest.

The records file is only ever appended to, one write and one flush per recorder flush (plus one
fsync when asked), so a hard kill loses at most what was not yet flushed. A torn last line left
by such a kill is cut off when the file is reopened; readers skip one anyway. ``FlushThread``
runs the encoding and writing of flushes in order, off the thread that steps the env.

Example::

    with JsonlSink(Path("out/episodes.jsonl")) as sink:
        sink.write(b'{"seq":0}\n', 1)
    write_json_atomic(Path("out/manifest.json"), {"status": "completed"})
"""

from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
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
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()

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

    def write(self, block: bytes, count: int) -> None:
        """Append ``count`` lines (``block``, each line ending in a newline) in one write,
        then flush."""
        if not count:
            return
        self._file.write(block)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.seq += count

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


class FlushThread:
    """Runs jobs in the order they are submitted, on one daemon thread.

    When no job came for ``tick_s`` seconds it calls ``tick`` (a recorder flushes what waited
    too long). The first error a job or ``tick`` raises stops the thread's work; ``check``,
    ``submit``, ``drain`` and ``join`` raise it on the caller's thread.

    Example::

        thread = FlushThread("flush", tick=recorder_tick, tick_s=0.25)
        thread.submit(lambda: sink.write(block, count))
        thread.join()  # everything submitted is done; raises the first error, if any
    """

    def __init__(self, name: str, tick: Callable[[], None], tick_s: float) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._tick = tick
        self._tick_s = tick_s
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._tick_s)
            except queue.Empty:
                job = self._tick
            else:
                if job is None:
                    self._jobs.task_done()
                    return
            try:
                if self._error is None:
                    job()
            except BaseException as err:  # noqa: BLE001 - raised again on the caller's thread
                self._error = err
            finally:
                if job is not self._tick:
                    self._jobs.task_done()

    def check(self) -> None:
        """Raise the first error of a job, if one failed."""
        error = self._error
        if error is not None:
            self._error = RuntimeError(f"an earlier flush failed: {error!r}")
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        self.check()
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every submitted job has run."""
        self._jobs.join()
        self.check()

    def join(self) -> None:
        """Run every submitted job, then stop the thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self.check()


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
