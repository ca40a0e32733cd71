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

import contextlib
import fcntl
import functools
import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

log = logging.getLogger(__name__)

_CLAIM_WAIT_S = 2.0  # how long a claim waits for a lock that a dying writer process still holds


class JsonlSink:
    """Appends lines to ``path``; ``seq`` counts the lines this writer has written.

    The file is locked (``flock``) for as long as the sink is open, so a second writer of the
    same file fails (within ``_CLAIM_WAIT_S``) instead of interleaving its lines; a killed
    writer's lock goes with its process. ``new=True`` claims the file: it must not exist yet, which two processes
    starting into one dir cannot both pass. A write that fails (a full disk) is cut back off
    the file, so the lines already there stay whole; ``error`` keeps that failure.
    ``inherited`` is a descriptor of the file that another process opened and claimed (a
    writer process gets its parent's): it shares the lock, which therefore lasts until both
    processes closed the file (or died), and the file is not repaired again.
    """

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = False,
        start_seq: int = 0,
        new: bool = False,
        inherited: int | None = None,
    ) -> None:
        self.path = path
        self.fsync = fsync
        self.seq = start_seq
        self.error: OSError | None = None
        fd = self._claim(path, new) if inherited is None else inherited
        self._file = open(fd, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        if inherited is None:
            self._repair()
        self._size = os.fstat(fd).st_size

    @staticmethod
    def _claim(path: Path, new: bool) -> int:
        """Open ``path`` for appending and lock it (``new``: it must not exist yet)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new else 0)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            raise FileExistsError(
                f"{path} already exists (another process started recording into this dir at the "
                "same time); a recording is never overwritten"
            ) from None
        deadline = time.monotonic() + _CLAIM_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() < deadline:  # a killed run's writer process may be dying
                    time.sleep(0.02)
                    continue
            os.close(fd)
            raise FileExistsError(
                f"{path} is being written by another process; give each process its own output "
                "dir or its own RANK"
            ) from None

    def fileno(self) -> int:
        return self._file.fileno()

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
        """Append ``count`` lines (``block``, each line ending in a newline) in one write
        (one fsync with ``fsync``). On failure the partial write is cut off again and the
        error is raised (and kept in ``error``): the file holds whole lines only."""
        if not count:
            return
        if self.error is not None:
            raise OSError(self.error.errno, f"an earlier write failed: {self.error}")
        written = 0
        try:
            view = memoryview(block)
            while written < len(block):
                written += self._file.write(view[written:])
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as err:
            self.error = err
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._size)
            raise
        except BaseException:  # Ctrl-C, SIGTERM: keep the whole lines that reached the file
            kept = block.rfind(b"\n", 0, written) + 1
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._size + kept)
            self._size += kept
            self.seq += block.count(b"\n", 0, kept)
            raise
        self._size += len(block)
        self.seq += count

    def close(self) -> None:
        """Sync and close the file (which releases its lock); raises when the sync fails."""
        if not self._file.closed:
            try:
                os.fsync(self._file.fileno())
            finally:
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
    too long). The first error a job or ``tick`` raises is kept, and ``check``, ``submit``,
    ``drain`` and ``join`` raise it on the caller's thread; later jobs still run (a job that
    cannot go on after a failure says so itself), so none leaves resources unreleased.

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
                job()
            except BaseException as err:  # noqa: BLE001 - raised again on the caller's thread
                if self._error is None:
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


@functools.cache
def _umask() -> int:
    """The process umask, read once: from ``/proc`` where it can be read without changing it,
    else by setting and restoring it (once, at the first manifest write)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
