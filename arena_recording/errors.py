"""The errors arena-recording raises on purpose, so callers can catch ours and nothing else.

Example::

    try:
        Session(cfg, output_dir)
    except ConfigError as err:
        print(err.key, err)  # "recorder.terms.final_x", "... names the bad value"
"""

from __future__ import annotations


class ArenaRecordingError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ArenaRecordingError, ValueError):
    """A config value that cannot work; ``key`` is its config path (``recorder.terms.x``)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)
