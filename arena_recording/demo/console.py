"""What the demo evaluations print: a progress bar while they run, where the records are after."""

from __future__ import annotations

import sys

from arena_recording.session import active_session


def progress(done: int, total: int, successes: int) -> None:
    """A one-line progress bar on stderr, e.g. ``[######----] 32/64 episodes, 20 successes``."""
    width = 30
    filled = width * min(done, total) // total
    end = "\n" if done >= total else ""
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {done}/{total} episodes, {successes} successes", end=end, file=sys.stderr)


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
