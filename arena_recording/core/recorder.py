"""The episode recorder: attributes draws to open episodes and writes a record per finished one.

An adapter (gymnasium wrapper, Isaac Lab hook) calls ``close`` with how the current episodes of
a reset batch ended, before it advances their identity and runs the reset.

Nothing on this path waits for the GPU. ``close`` gathers the batch's identities (one
operation), runs the custom terms and keeps every tensor involved, and each draw is kept as the
sampler returned it, in a device-side buffer (``DeviceLog``). A flush copies that buffer to host
memory in one non-blocking transfer; a background thread hands it to the writer
(``arena_recording.core.writer``: on that thread, or in a child process), which replays the
draws and closes in order (which values each episode ran with, whether an episode-scope
variation was drawn twice), runs the built-in terms ``core`` and ``variations`` on the host
columns, encodes and writes the lines. Flushes happen every ``flush_every_s`` seconds (``0``: at every reset batch, on the
caller's thread, as a plain synchronous recorder), when the buffer is full, and at ``finish``;
a hard kill loses at most the last ``flush_every_s`` seconds of records.

Custom terms run in ``close``, while the env still holds the episodes' final state. Tensors they
return stay on the device until the flush; other values are encoded at once. The batch they get
has the episodes' tensors on the device; its host-side fields (``termination``, ``start_time``,
``variations``) are computed on first access, which flushes and waits: a term that reads only
tensors and the env adds no synchronization. Every episode of the reset batch reaches the
custom terms, also those that get no record (no step taken, past the quota); their rows are
dropped at the flush. Samplers and custom terms must not modify a tensor in place after
returning it: the recorder reads it at the next flush.

Example (what an adapter does at each reset of ``env_ids``)::

    recorder = session.bind(identity, env=env, seed=seed, variations=[variation])
    recorder.close(EpisodeEnd(env_ids, length, terminated, truncated, termination))
    identity.advance(env_ids, started=length > 0)
    variation.sample(env_ids, seed=seed, episode_in_env=identity.episode_in_env[env_ids])
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arena_recording.core.buffer import DeviceLog, Packed, Segments
from arena_recording.core.config import WriterKind
from arena_recording.core.encoding import EncodeError, encode_column
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.format import IDENTITY_FIELDS
from arena_recording.core.sampling import Draw
from arena_recording.core.sinks import FlushThread
from arena_recording.core.terms import EpisodeBatch, Term
from arena_recording.core.variations import VariationBase, unique_keys
from arena_recording.core.writer import (
    FLUSH_TERMS,
    CloseEvent,
    DrawError,
    DrawEvent,
    EpisodeWriter,
    Track,
    WriterProcess,
    column_name,
    flatten,
)
from arena_recording.errors import ConfigError

__all__ = ["DrawError", "EpisodeRecorder"]

if TYPE_CHECKING:
    from arena_recording.core.sinks import JsonlSink

_CAPACITY_PER_ENV = 1024  # buffer bytes per env: about 600 steps of 1% resets with 5 factors
log = logging.getLogger(__name__)


class _LiveBatch(EpisodeBatch):
    """The batch custom terms see in ``close``: every field on first access (most terms read
    one or two)."""

    def __init__(
        self,
        recorder: EpisodeRecorder,
        end: EpisodeEnd,
        env_ids: torch.Tensor,
        ids: torch.Tensor,
        now: float,
    ):
        self._recorder = recorder
        self._end = end
        self._now = now
        self._ids = ids
        self.env_ids = env_ids
        self.length = end.length
        self.terminated = end.terminated
        self.truncated = end.truncated
        self.success = end.success
        self.seed = recorder.seed
        self.env = recorder.env

    @functools.cached_property
    def episode_in_env(self) -> torch.Tensor:  # type: ignore[override]
        return self._ids[:, 0]

    @functools.cached_property
    def episode_id(self) -> torch.Tensor:  # type: ignore[override]
        return self._ids[:, 1]

    @functools.cached_property
    def termination(self) -> list[str | None]:  # type: ignore[override]
        return self._recorder.termination_names[self._end.termination.cpu().numpy()].tolist()

    @functools.cached_property
    def end_time(self) -> np.ndarray:  # type: ignore[override]
        return np.full(self.env_ids.shape[0], self._now)

    @functools.cached_property
    def _state(self) -> tuple[np.ndarray, dict[str, Any]]:
        return self._recorder._peek(self.env_ids.cpu().numpy())

    @property
    def start_time(self) -> np.ndarray:  # type: ignore[override]
        return self._state[0]

    @property
    def variations(self) -> dict[str, Any]:  # type: ignore[override]
        return self._state[1]


class EpisodeRecorder:
    """Records the episodes of one env. Built by ``Session.bind``; adapters call ``close``."""

    def __init__(
        self,
        *,
        identity: EpisodeIdentity,
        terms: Sequence[Term],
        sink: JsonlSink,
        run_id: str,
        rank: int,
        seed: int,
        env: Any = None,
        termination_names: Sequence[str] = (),
        flush_every_s: float = 1.0,
        capacity_bytes: int | None = None,
        writer: WriterKind | str = WriterKind.thread,
    ) -> None:
        self.identity = identity
        self.terms = list(terms)
        self._custom = [t for t in self.terms if t.func not in FLUSH_TERMS]  # run at close
        self.sink = sink
        self.seed = seed
        self.env = env
        self.flush_every_s = flush_every_s
        self.set_termination_names(termination_names)
        self._tracked: dict[str, VariationBase] = {}
        self._quota: tuple[torch.Tensor, np.ndarray] | None = None
        device = identity.device
        capacity = capacity_bytes or _CAPACITY_PER_ENV * max(identity.num_envs, 1024)
        self._log = DeviceLog(device, capacity)
        self._events: list[Any] = []
        self._open_cache: tuple[Any, Any, int, tuple[torch.Tensor, torch.Tensor]] | None = None
        # the env ids and episodes logged by the last draw of this flush: the variations of
        # one reset batch share them, so they are logged once per batch
        self._shared: tuple[Any, Any] | None = None
        self._lock = threading.Lock()
        self._finished = False
        self._warned = False
        self._last_flush = time.monotonic()
        self._owners = self._flush_term_keys()
        self.writer = self._writer(writer, run_id, rank)
        self._thread = (
            FlushThread("arena-recording flush", self._flush_if_due, flush_every_s / 4)
            if flush_every_s > 0
            else None
        )

    def _writer(
        self, kind: WriterKind | str, run_id: str, rank: int
    ) -> EpisodeWriter | WriterProcess:
        """The writer of this env's records: ``thread``, ``process``, or ``auto`` (a process
        for a CUDA env, whose stepping thread must not share the interpreter lock with it)."""
        if kind not in WriterKind.__members__:
            raise ConfigError("writer", f"{kind!r} is not one of {list(WriterKind.__members__)}")
        spec = {
            "num_envs": self.identity.num_envs,
            "terms": [t if t.func in FLUSH_TERMS else t.name for t in self.terms],
            "run_id": run_id,
            "rank": rank,
            "seed": self.seed,
            "start_time": time.time(),
        }
        cuda = self.identity.device.type == "cuda"
        if kind == WriterKind.process or (kind == WriterKind.auto and cuda):
            return WriterProcess(spec, self.sink)
        return EpisodeWriter(sink=self.sink, env=self.env, **spec)

    # public API ---------------------------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """Episode counts of everything flushed so far."""
        return self.writer.counts

    def set_termination_names(self, names: Sequence[str]) -> None:
        """Names that ``EpisodeEnd.termination`` indexes (adapters may learn them late)."""
        self.termination_names = np.array([*names, None], dtype=object)

    def track(self, variation: VariationBase) -> None:
        """Record ``variation``'s draws with this env's episodes from now on: the recorder
        listens to it until ``untrack``. A disabled variation is not recorded but keeps its
        key: two variations of one env with one key are a ``ConfigError`` naming it."""
        if self._tracked.get(variation.key) is variation:
            return
        unique_keys([*self._tracked.values(), variation])
        self._tracked[variation.key] = variation
        if variation.enabled:
            self.flush()  # one flush holds one set of factors
            with self._lock:
                self._events.append(Track(variation.key, variation.scope, variation.labels))
            variation.add_sample_listener(self.on_draw)

    def untrack(self) -> None:
        """Stop listening to every tracked variation (the env no longer records)."""
        for variation in self._tracked.values():
            if variation.enabled:
                variation.remove_sample_listener(self.on_draw)
        self._tracked = {}

    def on_draw(self, draw: Draw) -> None:
        """Keep ``draw`` for the episodes open in its envs (attributed at the next flush).

        A draw for other episodes than those the identity has open is caught at that flush
        (``DrawError``); it is found on the device here, with no host synchronization."""
        variation = self._tracked.get(draw.key)
        if variation is None or not variation.enabled:
            return
        if self._finished and self._ended("a draw of " + draw.key):
            return
        build = draw.env_ids is None
        values = draw.values.unsqueeze(0) if build else draw.values
        step = draw.draw_index if isinstance(draw.draw_index, int) else None
        checked = not build and draw.episode_in_env is not None
        episodes = self._open(draw) if checked else None
        with self._lock:
            key = draw.key
            self._log.append(f"draw:{key}:values", values)
            shared = (
                episodes is not None
                and self._shared is not None
                and self._shared[0] is draw.env_ids
                and self._shared[1] is episodes
            )
            if not build and not shared:
                self._log.append(f"draw:{key}:env", draw.env_ids)
                if episodes is not None:
                    self._log.append(f"draw:{key}:drawn", episodes[0])
                    self._log.append(f"draw:{key}:open", episodes[1])
                self._shared = (draw.env_ids, episodes)
            if not build and step is None:
                steps = torch.as_tensor(draw.draw_index).expand(draw.env_ids.shape[0])
                self._log.append(f"draw:{key}:step", steps)
            self._events.append(DrawEvent(key, values.shape[0], build, step, checked, shared))
            due = self._due(close=False)
        if due:
            self.flush()

    def close(self, end: EpisodeEnd) -> None:
        """Record every episode in ``end`` that took a step (and is within the quota, if any),
        at the next flush; start timing the next ones."""
        if self._finished:
            self._ended(f"{end.env_ids.shape[0]} episode ends")
            return
        if self._thread is not None:
            self._thread.check()
        device = self.identity.device
        env_ids = end.env_ids.to(device)
        rows = env_ids.shape[0]
        if rows == 0:
            return
        self._check_quota()
        ids = self.identity.columns.index_select(0, env_ids)
        now = time.time()
        event = CloseEvent(rows, now, self.termination_names, end.success is not None)
        device_outputs = self._run_terms(event, end, env_ids, ids, now)
        with self._lock:
            self._log.append("close:env", env_ids)
            self._log.append("close:ids", ids)
            self._log.append("close:length", end.length)
            self._log.append("close:terminated", end.terminated)
            self._log.append("close:truncated", end.truncated)
            self._log.append("close:termination", end.termination)
            if end.success is not None:
                self._log.append("close:success", end.success)
            for path, tensor in device_outputs.items():
                self._log.append(column_name(path), tensor)
            self._events.append(event)
            due = self._due(close=True)
        if due:
            self.flush()

    def flush(self, block: bool = True) -> None:
        """Copy what is buffered to the host and write it (on the flushing thread, if any).

        ``block=False`` skips the flush when it would have to wait (for the lock, or for the
        encoder to give a host buffer back)."""
        if not self._lock.acquire(blocking=block):
            return
        try:
            if not self._events:
                return
            packed = self._log.pack(block)
            if packed is None:
                return
            events, self._events = self._events, []
            self._shared = None  # a flush's columns start afresh
            self._last_flush = time.monotonic()
            quota = None if self._quota is None else self._quota[1]
            job = functools.partial(self._write, packed, events, quota)
            if self._thread is not None:  # in the lock: flushes are written in order
                self._thread.submit(job)
                return
        finally:
            self._lock.release()
        job()

    def _ended(self, what: str) -> bool:
        """After ``finish`` nothing more can be written: say what is not recorded (once)."""
        if self._finished and not self._warned:
            self._warned = True
            log.warning(
                "arena-recording: %s came after the recording finished and are not recorded "
                "(close the env before the session ends)",
                what,
            )
        return self._finished

    def finish(self) -> None:
        """Flush everything, wait until it is written, stop the flushing thread and check the
        open episodes for double draws."""
        try:
            try:
                self.flush()
            finally:
                self._finished = True
                if self._thread is not None:
                    self._thread.join()
            self.writer.check_open_episodes(self.identity.episode_in_env.cpu().numpy())
        finally:
            self.writer.close()

    def _open(self, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """Per drawn row, the episode drawn for and the episode the identity has open in its
        env (one gather on the device, no synchronization); the flush compares them. Taken
        once per reset batch: the variations drawn together share their ``env_ids`` and
        ``episode_in_env`` tensors (compared as objects, with the identity's version)."""
        cached = self._open_cache
        if (
            cached is not None
            and cached[0] is draw.env_ids
            and cached[1] is draw.episode_in_env
            and cached[2] == self.identity.version
        ):
            return cached[3]
        identity = self.identity
        drawn = draw.episode_in_env
        if drawn.untyped_storage().data_ptr() == identity.columns.untyped_storage().data_ptr():
            drawn = drawn.clone()  # the identity's own view: the next advance changes it
        open_ = identity.episode_in_env.index_select(0, draw.env_ids.to(identity.device))
        episodes = (drawn, open_)
        self._open_cache = (draw.env_ids, draw.episode_in_env, identity.version, episodes)
        return episodes

    # close-time work ----------------------------------------------------------------------------

    def _due(self, close: bool) -> bool:
        """Flush when the buffer is full, at every reset batch with ``flush_every_s=0``, else
        once ``flush_every_s`` has passed."""
        if self._log.full:
            return True
        if self.flush_every_s == 0:
            return close
        return time.monotonic() - self._last_flush >= self.flush_every_s

    def _flush_if_due(self) -> None:
        if self._events and time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush(block=False)

    def _check_quota(self) -> None:
        """A host copy of the quota, taken once (a quota is fixed for the run)."""
        quota = self.identity.quota
        if quota is not None and (self._quota is None or self._quota[0] is not quota):
            self._quota = (quota, quota.cpu().numpy())

    def _flush_term_keys(self) -> dict[str, str]:
        """Who writes each top-level key: the identity, then the flush-time terms (asked with
        an empty batch), so a custom term's collision is found in ``close``."""
        owners = dict.fromkeys(IDENTITY_FIELDS, "the record identity")
        empty = np.zeros(0, dtype=np.int64)
        batch = EpisodeBatch(
            *(torch.zeros(0, dtype=torch.int64),) * 4,
            terminated=torch.zeros(0, dtype=torch.bool),
            truncated=torch.zeros(0, dtype=torch.bool),
            termination=[],
            success=None,
            start_time=empty.astype(float),
            end_time=empty.astype(float),
            seed=self.seed,
            variations={},
            env=self.env,
        )
        for term in self.terms:
            if term.func in FLUSH_TERMS:
                for key in term(batch):
                    owners.setdefault(key, f"term {term.name!r}")
        return owners

    def _run_terms(
        self,
        event: CloseEvent,
        end: EpisodeEnd,
        env_ids: torch.Tensor,
        ids: torch.Tensor,
        now: float,
    ) -> dict[tuple[str, ...], torch.Tensor]:
        """Run the custom terms: tensors are kept for the flush, other values encoded now."""
        if not self._custom:
            return {}
        batch = _LiveBatch(self, end, env_ids, ids, now)
        rows = event.rows
        device: dict[tuple[str, ...], torch.Tensor] = {}
        for term in self._custom:
            out = term(batch)
            name = f"recorder term {term.name!r}"
            for key in out:
                owner = self._owners.get(key)
                if owner is not None and owner != f"term {term.name!r}":
                    raise ValueError(f"{name} writes {key!r}, which {owner} already writes")
                self._owners[key] = f"term {term.name!r}"
            for path, value in flatten(out).items():
                where = ".".join((name, *path))
                if isinstance(value, torch.Tensor):
                    if value.ndim == 0:
                        value = value.expand(rows)
                    if value.shape[0] != rows:
                        raise EncodeError(f"{where}: {value.shape[0]} values for {rows} episodes")
                    device[(term.name, *path)] = value.detach()
                else:
                    event.host[(term.name, *path)] = encode_column(value, rows, where)
        event.device = tuple(device)
        return device

    def _peek(self, env: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Start times and variation columns of the open episodes of ``env`` (flushes, waits)."""
        self.flush()
        if self._thread is not None:
            self._thread.drain()
        return self.writer.peek(env)

    # flush-time work (the flushing thread) ------------------------------------------------------

    def _write(
        self, packed: Packed | Segments, events: list[Any], quota: np.ndarray | None
    ) -> None:
        """Hand one flush to the writer; a writer process gets a copy of columns that are views
        of a host buffer, so the buffer goes back before the child answers."""
        if isinstance(self.writer, WriterProcess) and isinstance(packed, Packed):
            try:
                columns = {name: array.copy() for name, array in packed.wait().items()}
            finally:
                packed.release()
            self.writer.write(columns, events, quota)
            return
        try:
            self.writer.write(packed.wait(), events, quota)
        finally:
            packed.release()
