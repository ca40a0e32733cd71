"""The recording session: the unit that owns terms, the records file, the manifest, listeners.

A session is opt-in. While one is active, every variation built in the process reports its
draws to it and env adapters bind to it; with none active, adapters do nothing. The Hydra
callback drives a session per job; a plain script uses a ``with`` block.

Example::

    cfg = RecorderCfg(terms={"core": TermCfg(func=core), "variations": TermCfg(func=variations)})
    with Session(cfg, output_dir="runs/eval-1"):
        env = VariationsWrapper(gym.make_vec("CartPole-v1", 8), variations, seed=0)
        ...  # step the env; records go to runs/eval-1/episodes.jsonl
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from arena_recording.core.config import RecorderCfg, recorder_cfg
from arena_recording.core.episodes import EpisodeIdentity
from arena_recording.core.format import (
    Counts,
    EnvInfo,
    FactorSchema,
    JobInfo,
    Manifest,
    manifest_name,
    read_manifest,
    records_name,
)
from arena_recording.core.recorder import EpisodeRecorder
from arena_recording.core.sinks import JsonlSink, write_json_atomic
from arena_recording.core.terms import resolve_term
from arena_recording.core.variations import VariationBase, observe_variations
from arena_recording.errors import ConfigError

log = logging.getLogger(__name__)

_PACKAGES = ("arena-recording", "hydra-core", "omegaconf", "torch", "gymnasium", "isaaclab")


def process_rank() -> int | None:
    """The rank from ``RANK`` or ``LOCAL_RANK`` when set (one records file per process)."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not an integer rank") from None
    return None


_active: Session | None = None


def active_session() -> Session | None:
    """The session recording in this process, if any."""
    return _active


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


class Session:
    """Records episodes into ``output_dir``: ``episodes.jsonl`` and ``manifest.json``.

    With ``RANK`` or ``LOCAL_RANK`` set, the files are ``episodes.rank{N}.jsonl`` and
    ``manifest.rank{N}.json``. Bad config fails here, before any work starts.
    """

    def __init__(
        self,
        cfg: RecorderCfg | Mapping[str, Any],
        output_dir: str | os.PathLike[str],
        *,
        job: Mapping[str, Any] | None = None,
    ) -> None:
        self.cfg = recorder_cfg(cfg)
        if self.cfg.flush_every_s < 0:
            raise ConfigError("recorder.flush_every_s", f"{self.cfg.flush_every_s} is negative")
        self.terms = [
            resolve_term(name, term) for name, term in self.cfg.terms.items() if term.enabled
        ]
        self.output_dir = Path(output_dir).absolute()
        rank = process_rank()
        self.rank = rank or 0
        self.records_path = self.output_dir / records_name(rank)
        self.manifest_path = self.output_dir / manifest_name(rank)
        self.job = JobInfo.from_dict(_jsonable(dict(job or {})))
        self.run_id = uuid.uuid4().hex
        self.status = "created"
        self._variations: list[VariationBase] = []
        self._recorder: EpisodeRecorder | None = None
        self._counts: Counter[str] = Counter()
        self._envs: list[EnvInfo] = []
        self._started_at: str | None = None
        self._finished_at: str | None = None
        self._error: str | None = None
        self._start_seq = 0
        self._check_output()

    def _check_output(self) -> None:
        existing = [p for p in (self.records_path, self.manifest_path) if p.exists()]
        if not existing:
            return
        if not self.cfg.resume:
            raise FileExistsError(
                f"{existing[0]} already exists; a recording is never overwritten. Choose a new "
                "output dir, or set recorder.resume=true to append to it."
            )
        if self.manifest_path.exists():
            previous = read_manifest(self.manifest_path)
            self.run_id = previous.run_id
            self._counts.update(previous.counts.to_counter())
            self._start_seq = previous.counts.episodes

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Open the records file, write a ``running`` manifest and become the active session."""
        global _active
        if _active is not None:
            raise RuntimeError(f"a recording session into {_active.output_dir} is already active")
        self._sink = JsonlSink(self.records_path, fsync=self.cfg.fsync, start_seq=self._start_seq)
        self._started_at = _now()
        self.status = "running"
        self._write_manifest()
        self._unobserve = observe_variations(self.attach)
        _active = self
        atexit.register(self._at_exit)
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)
        log.info("recording episodes to %s", self.records_path)
        return self

    def finish(self, status: str = "completed", error: BaseException | str | None = None) -> None:
        """Unbind the env, close the records file, write the final manifest, deactivate."""
        global _active
        if self.status != "running":
            return
        flush_error = None
        if self._recorder is not None:
            try:
                self.unbind(self._recorder)
            except Exception as err:  # noqa: BLE001 - the manifest says so, then it is raised
                flush_error = err
                if status == "completed":
                    status, error = "failed", err
        if status == "completed" and not self._counts["episodes"]:
            status = "empty"  # never a silent "completed" with nothing in it
            log.warning("arena-recording: no episode was recorded into %s", self.records_path)
        self._sink.close()
        self.status = status
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        self._error = error
        self._finished_at = _now()
        self._write_manifest()
        self._unobserve()
        for variation in self._variations:
            variation.remove_sample_listener(self._on_draw)
        _active = None
        atexit.unregister(self._at_exit)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        log.info(
            "recorded %d episodes (%s) to %s",
            self._counts["episodes"],
            status,
            self.records_path,
        )
        from arena_recording.analysis.compact import compact_finished  # skipped without pyarrow

        compact_finished(self.manifest_path)
        if flush_error is not None:
            raise flush_error

    def _at_exit(self) -> None:
        self.finish("interrupted", "the process exited before the session finished")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.finish("completed")
        elif isinstance(exc, KeyboardInterrupt | SystemExit):
            self.finish("interrupted", exc)
        else:
            self.finish("failed", exc)

    # variations and envs ---------------------------------------------------------------------

    def attach(self, variation: VariationBase) -> None:
        """Listen to ``variation`` (done automatically for variations built while active)."""
        if any(v is variation for v in self._variations):
            return
        self._variations.append(variation)
        variation.add_sample_listener(self._on_draw)
        if self._recorder is not None:
            self._recorder.track(variation)

    def _on_draw(self, draw: Any) -> None:
        if self._recorder is not None:
            self._recorder.on_draw(draw)
        else:
            self._counts["draws_without_env"] += 1

    def bind(
        self,
        identity: EpisodeIdentity,
        *,
        seed: int,
        env: Any = None,
        termination_names: Sequence[str] = (),
        variations: Sequence[VariationBase] = (),
    ) -> EpisodeRecorder:
        """Start recording the episodes of one env; one env is bound at a time."""
        if self.status != "running":
            raise RuntimeError(f"session is {self.status}, not running")
        if self._recorder is not None:
            raise RuntimeError("another env is already recording in this session; close it first")
        for variation in variations:
            self.attach(variation)
        recorder = EpisodeRecorder(
            identity=identity,
            terms=self.terms,
            sink=self._sink,
            run_id=self.run_id,
            rank=self.rank,
            seed=seed,
            env=env,
            termination_names=termination_names,
            flush_every_s=self.cfg.flush_every_s,
        )
        for variation in self._variations:
            recorder.track(variation)
        self._recorder = recorder
        self._envs.append(EnvInfo(identity.num_envs, str(identity.device), seed))
        self._write_manifest()
        return recorder

    def unbind(self, recorder: EpisodeRecorder) -> None:
        """Write everything ``recorder`` buffered and stop recording its env; its counts join
        the session's."""
        if recorder is self._recorder:
            try:
                recorder.finish()
            finally:
                self._counts.update(recorder.counts)
                self._recorder = None
                self._write_manifest()

    # manifest --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        total = Counter(self._counts)
        if self._recorder is not None:
            total.update(self._recorder.counts)
        return dict(total)

    def manifest(self) -> Manifest:
        """The manifest as it stands: what ``manifest.json`` holds after the next write."""
        return Manifest(
            run_id=self.run_id,
            status=self.status,
            records=self.records_path.name,
            rank=self.rank,
            error=self._error,
            started_at=self._started_at,
            finished_at=self._finished_at,
            job=self.job,
            versions=_versions(),
            envs=list(self._envs),
            factors=[FactorSchema.from_dict(_jsonable(v.schema())) for v in self._variations],
            terms={term.name: _jsonable(term.describe()) for term in self.terms},
            config=_jsonable(self.cfg),
            counts=Counts.from_counter(self.counts()),
        )

    def _write_manifest(self) -> None:
        write_json_atomic(self.manifest_path, self.manifest().to_dict())


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C so the session can mark itself interrupted."""
    raise SystemExit(128 + signum)
