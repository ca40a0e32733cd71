"""The recording session: the unit that owns terms, the records file, the manifest, listeners.

A session is opt-in. While one is active, env adapters bind their envs to it, each with the
variations that env draws: only the recorder of that env hears their draws (a variation no
recording env was given is not recorded). With none active, adapters do nothing. The Hydra
callback drives a session per job; a plain script uses a ``with`` block.

What a session promises, whatever happens to the process:

- **Start is all or nothing.** Everything is checked (terms and their descriptions, the output
  dir) before a file is created; a start that fails leaves nothing behind, so a retry works.
- **Identities never repeat in a file.** A resume continues ``seq``, ``episode_id`` and each
  env's ``episode_in_env`` after the records in the (repaired) file itself, and adds a segment
  to the manifest; a second env bound in one session continues ``episode_id``.
- **Finish always ends the session** and writes the final manifest when the disk allows; a
  write that failed (a full or read-only disk) ends in one ``RecordingIOError`` saying how
  many episodes are safely on disk. Lines already written are never damaged.
- **Signals stay the app's.** SIGTERM unwinds as ``SystemExit`` (the session ends
  interrupted) only where its default action would have killed the process; a handler someone
  else set (submitit's requeue, a trainer's checkpoint) is left in place and decides.
- **A heartbeat** rewrites the running manifest every ``heartbeat_s`` seconds, so readers
  (``format.status_now``) report a writer that was killed as ``crashed``.

Example::

    cfg = RecorderCfg(terms={"core": TermCfg(func=core), "variations": TermCfg(func=variations)})
    with Session(cfg, output_dir="runs/eval-1"):
        env = VariationsWrapper(gym.make_vec("CartPole-v1", 8, vectorization_mode="sync"), variations, seed=0)
        ...  # step the env; records go to runs/eval-1/episodes.jsonl
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import torch

from arena_recording.core.config import RecorderCfg, recorder_cfg
from arena_recording.core.episodes import EpisodeIdentity
from arena_recording.core.format import (
    Counts,
    EnvInfo,
    FactorSchema,
    JobInfo,
    Manifest,
    Segment,
    manifest_name,
    read_manifest,
    records_name,
)
from arena_recording.core.recorder import EpisodeRecorder
from arena_recording.core.replay import Replay
from arena_recording.core.sinks import JsonlSink, write_json_atomic
from arena_recording.core.terms import resolve_term
from arena_recording.core.variations import VariationBase, unique_keys
from arena_recording.errors import ArenaRecordingError, ConfigError

log = logging.getLogger(__name__)

_PACKAGES = ("arena-recording", "hydra-core", "omegaconf", "torch", "gymnasium", "isaaclab")
HEARTBEAT_S = 30.0
"""How often a running session rewrites its manifest (``updated_at``)."""
_SEED_MASK = 0x7FFFFFFF  # seeds fit every RNG's seed argument (numpy, torch, gymnasium)


class RecordingIOError(ArenaRecordingError, OSError):
    """Writing the recording failed (a full or read-only disk); the message says what is safe."""


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


def resolve_seed(seed: int | None) -> int:
    """The seed variations draw with: ``seed`` itself, or, when none is given, one derived from
    the active session's run id (the manifest keeps it with the env, and a resume derives the
    same one). With no session nothing is recorded, and a missing seed is random, as in
    gymnasium.

    Example::

        seed = resolve_seed(env.cfg.seed)  # Isaac Lab: cfg.seed may be None
    """
    if seed is not None:
        return int(seed)
    session = active_session()
    if session is not None:
        log.warning(
            "arena-recording: no seed given; variations draw with seed %d, derived from run id "
            "%s (written to the manifest)",
            session.derived_seed,
            session.run_id,
        )
        return session.derived_seed
    return int.from_bytes(os.urandom(4), "little") & _SEED_MASK


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


@dataclass
class _Continuation:
    """Where a resumed recording continues: read from its records file, not from its manifest
    (whose counts are stale after a kill)."""

    seq: int = 0
    episode_id: int = 0
    in_env: dict[int, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, path: Path) -> _Continuation:
        """One pass over the complete lines of ``path`` (a torn last line was cut already)."""
        found = cls()
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                found.counts["episodes"] += 1
                found.seq = max(found.seq, int(record.get("seq", found.seq - 1)) + 1)
                if "episode_id" in record:
                    found.episode_id = max(found.episode_id, int(record["episode_id"]) + 1)
                if "env_id" in record and "episode_in_env" in record:
                    env, episode = int(record["env_id"]), int(record["episode_in_env"])
                    found.in_env[env] = max(found.in_env.get(env, 0), episode + 1)
                if record.get("status") in ("terminated", "truncated", "aborted"):
                    found.counts[record["status"]] += 1
                if isinstance(record.get("success"), bool):
                    found.counts["success"] += record["success"]
        found.seq = max(found.seq, found.counts["episodes"])
        return found

    def next_in_env(self, num_envs: int) -> torch.Tensor:
        return torch.tensor([self.in_env.get(env, 0) for env in range(num_envs)])


def _complete_lines(path: Path) -> int | None:
    """The number of whole lines in ``path`` (``None`` when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


class Session:
    """Records episodes into ``output_dir``: ``episodes.jsonl`` and ``manifest.json``.

    With ``RANK`` or ``LOCAL_RANK`` set, the files are ``episodes.rank{N}.jsonl`` and
    ``manifest.rank{N}.json``. Bad config fails here, before any work starts.
    ``heartbeat_s`` is how often the running manifest is rewritten (see ``format.status_now``).
    """

    def __init__(
        self,
        cfg: RecorderCfg | Mapping[str, Any],
        output_dir: str | os.PathLike[str],
        *,
        job: Mapping[str, Any] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.cfg = recorder_cfg(cfg)
        if self.cfg.flush_every_s < 0:
            raise ConfigError("recorder.flush_every_s", f"{self.cfg.flush_every_s} is negative")
        self.terms = [
            resolve_term(name, term) for name, term in self.cfg.terms.items() if term.enabled
        ]
        self.replay: Replay | None = None
        if self.cfg.replay is not None and self.cfg.replay.source is not None:
            self.replay = Replay.load(self.cfg.replay)  # recorded episodes to run again
            self.terms.append(self.replay.term())
        self.output_dir = Path(output_dir).absolute()
        rank = process_rank()
        self.rank = rank or 0
        self.records_path = self.output_dir / records_name(rank)
        self.manifest_path = self.output_dir / manifest_name(rank)
        self.job = JobInfo.from_dict(_jsonable(dict(job or {})))
        self.heartbeat_s = heartbeat_s
        self.run_id = uuid.uuid4().hex
        self.status = "created"
        self._variations: list[VariationBase] = []
        self._recorder: EpisodeRecorder | None = None
        self._counts: Counter[str] = Counter()
        self._envs: list[EnvInfo] = []
        self._segments: list[Segment] = []
        self._started_at: str | None = None
        self._finished_at: str | None = None
        self._updated_at: str | None = None
        self._error: str | None = None
        self._versions = _versions()
        self._resuming = False
        self._next_episode_id = 0
        self._continuation: _Continuation | None = None  # a resume's, for the first env bound
        self._manifest_lock = threading.Lock()
        self._stop_beating = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._sigterm_installed = False
        self._check_output()

    @property
    def derived_seed(self) -> int:
        """The seed used when none is given: a function of the run id (see ``resolve_seed``)."""
        return int(self.run_id[:8], 16) & _SEED_MASK

    def _check_output(self) -> None:
        existing = [p for p in (self.records_path, self.manifest_path) if p.exists()]
        if not existing:
            return
        if not self.cfg.resume:
            raise FileExistsError(
                f"{existing[0]} already exists; a recording is never overwritten. Choose a new "
                "output dir, or set recorder.resume=true to append to it."
            )
        self._resuming = True
        if self.manifest_path.exists():
            previous = read_manifest(self.manifest_path)
            self.run_id = previous.run_id
            self._started_at = previous.started_at
            self._segments = list(previous.segments)
            self._envs = list(previous.envs)
            self._counts.update(previous.counts.to_counter())

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Check everything, then claim the records file, write a ``running`` manifest and
        become the active session. A start that fails leaves no file of its own behind."""
        global _active
        if _active is not None:
            raise RuntimeError(f"a recording session into {_active.output_dir} is already active")
        if self.status != "created":
            raise RuntimeError(f"a session starts once; this one is {self.status}")
        segment = Segment(uuid.uuid4().hex, _now())
        self._started_at = self._started_at or segment.started_at
        self.status = "running"
        try:
            self.manifest().to_dict()  # every term describes itself before a file exists
            self._check_writable()
            sink = JsonlSink(self.records_path, fsync=self.cfg.fsync, new=not self._resuming)
        except BaseException:
            self.status = "created"
            raise
        try:
            if self._resuming:
                self._continue(sink)
            segment.first_seq, segment.first_episode_id = sink.seq, self._next_episode_id
            self._sink = sink
            self._segments.append(segment)
            self._write_manifest()
        except BaseException:
            self.status = "created"
            if self._segments and self._segments[-1] is segment:
                self._segments.pop()
            with contextlib.suppress(OSError):
                sink.close()
            if not self._resuming:
                self.records_path.unlink(missing_ok=True)  # ours and empty: a retry starts clean
            raise
        _active = self
        atexit.register(self._at_exit)
        self._install_sigterm()
        self._heartbeat = threading.Thread(
            target=self._beat, name="arena-recording heartbeat", daemon=True
        )
        self._heartbeat.start()
        log.info("recording episodes to %s", self.records_path)
        return self

    def _check_writable(self) -> None:
        """The output dir can take files (not read-only, not someone else's)."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.output_dir, prefix=".arena-recording-probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise RecordingIOError(
                err.errno, f"cannot record into {self.output_dir}: {err.strerror or err}"
            ) from None

    def _continue(self, sink: JsonlSink) -> None:
        """Continue ``seq`` and the episode identities after the records already in the file."""
        found = _Continuation.read(self.records_path)
        sink.seq = found.seq
        self._next_episode_id = found.episode_id
        self._continuation = found
        self._count_from(found)
        if found.counts["episodes"]:
            log.info(
                "resuming %s after %d records: seq from %d, episode_id from %d",
                self.records_path,
                found.counts["episodes"],
                found.seq,
                found.episode_id,
            )

    def _count_from(self, found: _Continuation) -> None:
        """Episode counts as the records file has them (a kill or a signal can land between a
        batch's write and its count)."""
        for name in ("episodes", "terminated", "truncated", "aborted", "success"):
            self._counts.pop(name, None)
        self._counts.update(found.counts)

    def finish(self, status: str = "completed", error: BaseException | str | None = None) -> None:
        """Unbind the env, close the records file, write the final manifest, deactivate.

        The session is deactivated whatever happens. When writing failed (now or during the
        run), raises one ``RecordingIOError`` that says how many episodes are safely on disk;
        another error of the final flush (a double draw, a term's bad value) is raised as it is.
        """
        if self.status != "running":
            return
        problems: list[BaseException] = []
        write_error: OSError | None = None
        manifest_written = False
        try:
            if self._recorder is not None:
                try:
                    self.unbind(self._recorder)
                except Exception as err:  # noqa: BLE001 - the manifest says so, then it is raised
                    problems.append(err)
            self._stop_heartbeat()
            try:
                self._sink.close()
            except OSError as err:
                problems.append(err)
            write_error = self._write_error(problems)
            if status == "interrupted" and write_error is None:
                with contextlib.suppress(OSError):
                    self._count_from(_Continuation.read(self.records_path))
            if status == "completed" and problems:
                status, error = "failed", write_error or problems[0]
            if status == "completed" and not self._counts["episodes"]:
                status = "empty"  # never a silent "completed" with nothing in it
                log.warning("arena-recording: no episode was recorded into %s", self.records_path)
            self.status = status
            if isinstance(error, BaseException):
                error = f"{type(error).__name__}: {error}"
            self._error = error
            self._finished_at = _now()
            try:
                self._write_manifest()
                manifest_written = True
            except OSError as err:
                problems.append(err)
                write_error = write_error or err
        finally:
            self._deactivate()
        log.info(
            "recorded %d episodes (%s) to %s", self._counts["episodes"], status, self.records_path
        )
        if write_error is not None:
            raise self._io_error(write_error, manifest_written) from None
        if problems:
            raise problems[0]
        from arena_recording.analysis.compact import compact_finished  # skipped without pyarrow

        compact_finished(self.manifest_path)

    def _write_error(self, problems: list[BaseException]) -> OSError | None:
        """The first failed write of the records or the manifest, if any."""
        if self._sink.error is not None:
            return self._sink.error
        return next((p for p in problems if isinstance(p, OSError)), None)

    def _io_error(self, cause: OSError, manifest_written: bool) -> RecordingIOError:
        safe = _complete_lines(self.records_path)
        first = self._segments[-1].first_seq if self._segments else 0
        kept = (
            f"{safe} episode record(s) are safely on disk in {self.records_path}"
            f" ({max(safe - first, 0)} of them from this process)"
            if safe is not None
            else f"the records file {self.records_path} cannot be read back"
        )
        manifest = (
            f"{self.manifest_path.name} says {self.status!r}"
            if manifest_written
            else f"{self.manifest_path.name} could not be updated: it still says 'running', "
            "and readers report the run as crashed once its heartbeat is stale"
        )
        return RecordingIOError(
            cause.errno,
            f"arena-recording: writing the recording in {self.output_dir} failed "
            f"({type(cause).__name__}: {cause}). {kept}; every line there is whole. {manifest}. "
            "Free space (or make the dir writable) and continue with recorder.resume=true.",
        )

    def _deactivate(self) -> None:
        global _active
        self._stop_heartbeat()
        if _active is self:
            _active = None
        atexit.unregister(self._at_exit)
        self._restore_sigterm()

    def _at_exit(self) -> None:
        try:
            self.finish("interrupted", "the process exited before the session finished")
        except Exception as err:  # noqa: BLE001 - at exit, a clear line beats a traceback
            log.error("%s", err)
            print(err, file=sys.stderr)

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

    # signals and heartbeat -------------------------------------------------------------------

    def _install_sigterm(self) -> None:
        """SIGTERM unwinds (the session ends interrupted) where it would have killed the
        process; a handler set by someone else (or SIG_IGN) is theirs and stays in place."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_system_exit)
            self._sigterm_installed = True

    def _restore_sigterm(self) -> None:
        if not self._sigterm_installed:
            return
        self._sigterm_installed = False
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGTERM) is _raise_system_exit:  # not replaced since
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _beat(self) -> None:
        warned = False
        while not self._stop_beating.wait(self.heartbeat_s):
            try:
                self._write_manifest(only_running=True)
            except OSError as err:
                if not warned:
                    log.warning(
                        "arena-recording: heartbeat of %s failed: %s", self.manifest_path, err
                    )
                    warned = True

    def _stop_heartbeat(self) -> None:
        self._stop_beating.set()
        thread, self._heartbeat = self._heartbeat, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # variations and envs ---------------------------------------------------------------------

    def attach(self, variation: VariationBase, recorder: EpisodeRecorder) -> None:
        """Bind ``variation`` to the env ``recorder`` records, for one built after the env was
        bound: its draws are recorded with that env's episodes, and no other env's.

        Example::

            recorder = session.bind(identity, seed=0, variations=variations)
            session.attach(late_variation, recorder)
        """
        if recorder is not self._recorder:
            raise RuntimeError("this recorder does not record in this session (unbound?)")
        self._describe(variation)
        recorder.track(variation)

    def _describe(self, variation: VariationBase) -> None:
        """The manifest describes ``variation`` (once per key and schema); a replay sets its
        values."""
        if self.replay is not None:
            self.replay.attach(variation)
        if not any(
            v is variation or (v.key == variation.key and v.schema() == variation.schema())
            for v in self._variations
        ):
            self._variations.append(variation)

    def bind(
        self,
        identity: EpisodeIdentity,
        *,
        seed: int,
        env: Any = None,
        termination_names: Sequence[str] = (),
        variations: Sequence[VariationBase] = (),
    ) -> EpisodeRecorder:
        """Start recording the episodes of one env with its ``variations``; one env is bound at
        a time. The recorder hears the draws of ``variations`` only (and of those ``attach``
        adds): a variation of another env is never attributed to this one. Keys are unique
        within the env (a ``ConfigError`` naming the key).

        ``identity`` must be fresh: its episodes are numbered after those already recorded
        (``episode_id`` always; each env's ``episode_in_env`` on the first bind of a resume).
        A second env bound in one session starts ``episode_in_env`` at 0 again, so with the
        same seed it runs the same factor values (compare two policies on them); its records
        keep their own ``episode_id``."""
        if self.status != "running":
            raise RuntimeError(f"session is {self.status}, not running")
        if self._recorder is not None:
            raise RuntimeError("another env is already recording in this session; close it first")
        unique_keys(variations)
        for variation in variations:
            self._describe(variation)
        continuation, self._continuation = self._continuation, None
        identity.continue_after(
            self._next_episode_id,
            None if continuation is None else continuation.next_in_env(identity.num_envs),
        )
        if self.replay is not None:
            self.replay.bind(identity)  # its rows to env slots; the quota is its budget
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
            writer=self.cfg.writer,
        )
        for variation in variations:
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
                recorder.untrack()
                with self._manifest_lock:
                    self._counts.update(recorder.counts)
                    self._recorder = None
                last = int(recorder.identity.episode_id.max()) if recorder.identity.num_envs else -1
                self._next_episode_id = max(self._next_episode_id, last + 1)
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
            updated_at=self._updated_at,
            heartbeat_s=self.heartbeat_s,
            segments=list(self._segments),
            job=self.job,
            versions=self._versions,
            envs=list(self._envs),
            factors=[FactorSchema.from_dict(_jsonable(v.schema())) for v in list(self._variations)],
            terms={term.name: _jsonable(term.describe()) for term in self.terms},
            config=_jsonable(self.cfg),
            counts=Counts.from_counter(self.counts()),
            replay=None if self.replay is None else self.replay.describe(),
        )

    def _write_manifest(self, only_running: bool = False) -> None:
        """Write the manifest (``only_running``: unless the session has ended meanwhile)."""
        with self._manifest_lock:
            if only_running and self.status != "running":
                return
            self._updated_at = _now()
            write_json_atomic(self.manifest_path, self.manifest().to_dict())


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C so the session can mark itself interrupted (installed only
    where the default action would have killed the process)."""
    raise SystemExit(128 + signum)
