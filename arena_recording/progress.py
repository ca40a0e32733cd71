"""What evaluations print: a progress bar while they run, the success rate and where the records are after."""

from __future__ import annotations

import sys

from arena_recording.core.session import active_session


class Tally:
    """Counts finished and successful episodes and shows a progress bar on stderr, e.g.
    ``[######----] 32/64 episodes, 20 successes``: redrawn in place on a terminal, a new line at
    every tenth of the way in a log file. ``successes`` is ``None`` for a task without a notion
    of success."""

    def __init__(self, total: int, *, success: bool = True) -> None:
        self.total = total
        self.finished = 0
        self.successes: int | None = 0 if success else None

    def add(self, finished: int, successes: int = 0) -> None:
        before = self.finished
        self.finished += finished
        if self.successes is not None:
            self.successes += successes
        tty = sys.stderr.isatty()
        if not tty and self.finished * 10 // self.total == before * 10 // self.total:
            return
        width = 30
        filled = width * min(self.finished, self.total) // self.total
        bar = "#" * filled + "-" * (width - filled)
        text = f"[{bar}] {self.finished}/{self.total} episodes"
        if self.successes is not None:
            text += f", {self.successes} successes"
        if tty:
            end = "\n" if self.finished >= self.total else ""
            print(f"\r{text}", end=end, file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def summary(self) -> float | None:
        """Print the success rate and where the records went; return the rate."""
        rate = None if self.successes is None else self.successes / self.finished
        if rate is None:
            print(f"{self.finished} episodes; the task has no success term")
        else:
            print(f"success rate {rate:.3f} over {self.finished} episodes")
        session = active_session()
        if session is None:
            print("recording is off; add +recorder=default to record every episode")
        else:
            print(f"records: {session.records_path}")
            print(f"manifest: {session.manifest_path}")
        return rate
