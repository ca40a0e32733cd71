"""What evaluations print: a progress bar while they run, the success rate and where the records are after."""

from __future__ import annotations

import sys

from arena_recording.core.session import active_session


class Tally:
    """Counts finished and successful episodes and shows a progress bar on stderr, e.g.
    ``[######----] 32/64 episodes, 20 successes``: redrawn in place on a terminal, a new line at
    every tenth of the way in a log file."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0
        self.successes = 0

    def add(self, finished: int, successes: int) -> None:
        before = self.finished
        self.finished += finished
        self.successes += successes
        tty = sys.stderr.isatty()
        if not tty and self.finished * 10 // self.total == before * 10 // self.total:
            return
        width = 30
        filled = width * min(self.finished, self.total) // self.total
        bar = "#" * filled + "-" * (width - filled)
        text = f"[{bar}] {self.finished}/{self.total} episodes, {self.successes} successes"
        if tty:
            end = "\n" if self.finished >= self.total else ""
            print(f"\r{text}", end=end, file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def summary(self) -> float:
        """Print the success rate and where the records went; return the rate."""
        rate = self.successes / self.finished
        print(f"success rate {rate:.3f} over {self.finished} episodes")
        session = active_session()
        if session is None:
            print("recording is off; add +recorder=default to record every episode")
        else:
            print(f"records: {session.records_path}")
            print(f"manifest: {session.manifest_path}")
        return rate
