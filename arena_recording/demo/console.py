"""What the demo evaluations print: a progress bar while they run, where the records are after."""

from __future__ import annotations

import sys

from arena_recording.session import active_session


def progress(done: int, total: int, successes: int, before: int) -> None:
    """A progress bar on stderr, e.g. ``[######----] 32/64 episodes, 20 successes``: redrawn in
    place on a terminal, a new line at every tenth of the way in a log file."""
    tty = sys.stderr.isatty()
    if not tty and done * 10 // total == before * 10 // total:
        return
    width = 30
    filled = width * min(done, total) // total
    bar = "#" * filled + "-" * (width - filled)
    text = f"[{bar}] {done}/{total} episodes, {successes} successes"
    if tty:
        print(f"\r{text}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)


def summary(successes: int, episodes: int) -> float:
    """Print the success rate and where the records went; return the rate."""
    rate = successes / episodes
    print(f"success rate {rate:.3f} over {episodes} episodes")
    session = active_session()
    if session is None:
        print("recording is off; add '+recorder=[core,variations]' to record every episode")
    else:
        print(f"records: {session.records_path}")
        print(f"manifest: {session.manifest_path}")
    return rate
