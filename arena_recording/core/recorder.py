"""The episode recorder: attributes draws to open episodes and writes a record per finished one.

An adapter (gymnasium wrapper, Isaac Lab hook) calls ``close`` with how the current episodes of
a reset batch ended, before it advances their identity and runs the reset.

Nothing on this path waits for the GPU. ``close`` gathers the batch's identities (one
operation), runs the custom terms and keeps every tensor involved, and each draw is kept as the
sampler returned it, in a device-side buffer (``DeviceLog``). A flush copies that buffer to host
memory in one non-blocking transfer; a background thread then replays the draws and closes in
order (which values each episode ran with, whether an episode-scope variation was drawn twice),
runs the built-in terms ``core`` and ``variations`` on the host columns, encodes and writes the
lines. Flushes happen every ``flush_every_s`` seconds (``0``: at every reset batch, on the
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arena_recording.core import terms as builtin
from arena_recording.core.buffer import DeviceLog, Packed
from arena_recording.core.encoding import Encoded, EncodeError, encode_column, encode_lines
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.format import IDENTITY_FIELDS, SCHEMA_VERSION
from arena_recording.core.sampling import Draw, Scope
from arena_recording.core.sinks import FlushThread
from arena_recording.core.terms import EpisodeBatch, Term
from arena_recording.core.variations import VariationBase, unique_keys

if TYPE_CHECKING:
    from arena_recording.core.sinks import JsonlSink

FLUSH_TERMS = (builtin.core, builtin.variations)
"""Term functions that run at flush time on the buffered columns instead of in ``close``."""

_CAPACITY_PER_ENV = 1024  # buffer bytes per env: about 600 steps of 1% resets with 5 factors
# The flushing thread holds the interpreter lock while it replays and encodes; it gives it up
# this often so the stepping thread never waits long for it.
_YIELD_EVERY = 64  # events replayed
_ENCODE_ROWS = 1024  # records encoded

log = logging.getLogger(__name__)


class DrawError(RuntimeError):
    """A draw that cannot be attributed to exactly one episode."""


# the event log: what happened between two flushes, in order -----------------------------------


@dataclass
class _Track:
    variation: VariationBase


@dataclass
class _Draw:
    key: str
    rows: int
    build: bool  # one value for every env (``env_ids`` was None)
    step: int | None  # the draw index when it was a plain int (else a buffered column)
    checked: bool = False  # its episodes were compared with the identity (a buffered column)


@dataclass
class _Close:
    rows: int
    time: float
    names: np.ndarray
    success: bool
    host: dict[tuple[str, ...], Encoded] = field(default_factory=dict)
    device: tuple[tuple[str, ...], ...] = ()


class _Factor:
    """What one variation drew for the open episode of every env (host side, at flush)."""

    def __init__(self, variation: VariationBase, num_envs: int) -> None:
        self.key = variation.key
        self.scope = variation.scope
        self.values: np.ndarray | None = None
        self.count = np.zeros(num_envs, dtype=np.int64)  # draws in the open episode
        self.ever = np.zeros(num_envs, dtype=bool)
        self.interval: dict[int, list[dict[str, Any]]] = {}
        labels = variation.labels
        self.labels = None if labels is None else np.array(labels, dtype=object)

    def draw(self, env: np.ndarray | None, values: np.ndarray, steps: np.ndarray) -> None:
        if self.scope is Scope.interval:
            for e, s, v in zip(env.tolist(), steps.tolist(), values.tolist(), strict=True):
                self.interval.setdefault(e, []).append({"step": s, "value": v})
            return
        if self.values is None:
            self.values = np.zeros((self.count.shape[0], *values.shape[1:]), dtype=values.dtype)
        rows = slice(None) if env is None else env
        self.values[rows] = values
        self.count[rows] += 1
        self.ever[rows] = True

    def close(self, env: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """Values (or interval lists), drawn flags and draw counts of the closing episodes."""
        count = self.count[env]
        self.count[env] = 0
        if self.scope is Scope.interval:
            return [self.interval.pop(e, []) for e in env.tolist()], np.ones(len(env), bool), count
        drawn = count > 0 if self.scope is Scope.episode else self.ever[env]
        values = None if self.values is None else self.values[env]
        return values, drawn, count

    def column(self, values: Any, drawn: np.ndarray, encoded: bool = False) -> Any:
        """The values of the rows, ``None`` where not drawn (``encoded``: as JSON texts, which
        keeps a partly drawn numeric column on the fast path)."""
        if self.scope is Scope.interval:
            return values
        if values is None:
            return None
        if self.labels is not None:
            values = self.labels[values]
        if drawn.all():
            return values
        if encoded:
            texts = encode_column(values, len(values), f"variations.{self.key}")
            for i in np.flatnonzero(~drawn).tolist():
                texts[i] = b"null"
            return texts
        return [v if d else None for v, d in zip(values.tolist(), drawn.tolist(), strict=True)]


class _LiveBatch(EpisodeBatch):
    """The batch custom terms see in ``close``: tensors at once, host fields on first access."""

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
        self.env_ids = env_ids
        self.episode_in_env = ids[:, 0]
        self.episode_id = ids[:, 1]
        self.length = end.length
        self.terminated = end.terminated
        self.truncated = end.truncated
        self.success = end.success
        self.seed = recorder.seed
        self.env = recorder.env

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


def _flatten(out: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in out.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _column_name(path: tuple[str, ...]) -> str:
    return "term:" + "\x00".join(path)


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
    ) -> None:
        self.identity = identity
        self.terms = list(terms)
        self.sink = sink
        self.run_id = run_id
        self.rank = rank
        self.seed = seed
        self.env = env
        self.flush_every_s = flush_every_s
        self.set_termination_names(termination_names)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._tracked: dict[str, VariationBase] = {}
        self._factors: dict[str, _Factor] = {}  # replay state, touched by the flushing thread
        self._start_time = np.full(identity.num_envs, time.time())
        self._quota: tuple[torch.Tensor, np.ndarray] | None = None
        device = identity.device
        capacity = capacity_bytes or _CAPACITY_PER_ENV * max(identity.num_envs, 1024)
        self._log = DeviceLog(device, capacity)
        self._events: list[Any] = []
        self._stale_cache: tuple[Any, Any, int, torch.Tensor] | None = None
        self._lock = threading.Lock()
        self._finished = False
        self._warned = False
        self._last_flush = time.monotonic()
        self._failed = False
        self._owners = self._flush_term_keys()
        self._thread = (
            FlushThread("arena-recording flush", self._flush_if_due, flush_every_s / 4)
            if flush_every_s > 0
            else None
        )

    # public API ---------------------------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """Episode counts of everything flushed so far."""
        with self._counts_lock:
            return Counter(self._counts)

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
                self._events.append(_Track(variation))
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
        if variation is None or not variation.enabled or self._ended("a draw of " + draw.key):
            return
        build = draw.env_ids is None
        values = draw.values.unsqueeze(0) if build else draw.values
        step = draw.draw_index if isinstance(draw.draw_index, int) else None
        checked = not build and draw.episode_in_env is not None
        with self._lock:
            self._log.append(f"draw:{draw.key}:values", values)
            if not build:
                self._log.append(f"draw:{draw.key}:env", draw.env_ids)
                if step is None:
                    steps = torch.as_tensor(draw.draw_index).expand(draw.env_ids.shape[0])
                    self._log.append(f"draw:{draw.key}:step", steps)
            if checked:
                self._log.append(f"draw:{draw.key}:stale", self._stale(draw))
            self._events.append(_Draw(draw.key, values.shape[0], build, step, checked))
            due = self._due(close=False)
        if due:
            self.flush()

    def close(self, end: EpisodeEnd) -> None:
        """Record every episode in ``end`` that took a step (and is within the quota, if any),
        at the next flush; start timing the next ones."""
        if self._ended(f"{end.env_ids.shape[0]} episode ends"):
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
        event = _Close(rows, now, self.termination_names, end.success is not None)
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
                self._log.append(_column_name(path), tensor)
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
            self._last_flush = time.monotonic()
            job = functools.partial(self._write, packed, events)
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
            self.flush()
        finally:
            self._finished = True
            if self._thread is not None:
                self._thread.join()
        for factor in self._factors.values():
            if factor.scope is Scope.episode and (factor.count > 1).any():
                env = int(np.flatnonzero(factor.count > 1)[0])
                raise _draw_error(factor.key, env, int(self.identity.episode_in_env[env]))

    def _stale(self, draw: Draw) -> torch.Tensor:
        """Per drawn row, the episode it was drawn for where that is not the episode the
        identity has open in its env, else -1 (on the device, no synchronization). Computed
        once per reset batch: the variations drawn together share their ``env_ids`` and
        ``episode_in_env`` tensors (compared as objects, with the identity's version)."""
        cached = self._stale_cache
        if (
            cached is not None
            and cached[0] is draw.env_ids
            and cached[1] is draw.episode_in_env
            and cached[2] == self.identity.version
        ):
            return cached[3]
        device = self.identity.device
        drawn = draw.episode_in_env.to(device, torch.int64)
        open_ = self.identity.episode_in_env.index_select(0, draw.env_ids.to(device))
        stale = torch.where(drawn != open_, drawn, -1)
        self._stale_cache = (draw.env_ids, draw.episode_in_env, self.identity.version, stale)
        return stale

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
        self, event: _Close, end: EpisodeEnd, env_ids: torch.Tensor, ids: torch.Tensor, now: float
    ) -> dict[tuple[str, ...], torch.Tensor]:
        """Run the custom terms: tensors are kept for the flush, other values encoded now."""
        custom = [t for t in self.terms if t.func not in FLUSH_TERMS]
        if not custom:
            return {}
        batch = _LiveBatch(self, end, env_ids, ids, now)
        rows = event.rows
        device: dict[tuple[str, ...], torch.Tensor] = {}
        for term in custom:
            out = term(batch)
            name = f"recorder term {term.name!r}"
            for key in out:
                owner = self._owners.get(key)
                if owner is not None and owner != f"term {term.name!r}":
                    raise ValueError(f"{name} writes {key!r}, which {owner} already writes")
                self._owners[key] = f"term {term.name!r}"
            for path, value in _flatten(out).items():
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
        columns = {}
        for key, factor in self._factors.items():
            count = factor.count[env]
            if factor.scope is Scope.interval:
                columns[key] = [list(factor.interval.get(e, [])) for e in env.tolist()]
            else:
                drawn = count > 0 if factor.scope is Scope.episode else factor.ever[env]
                values = None if factor.values is None else factor.values[env]
                columns[key] = factor.column(values, drawn)
        return self._start_time[env], columns

    # flush-time work (the flushing thread) ------------------------------------------------------

    def _write(self, packed: Packed, events: list[Any]) -> None:
        if self._failed:  # an earlier flush failed: its state is not to be built on
            packed.release()
            return
        try:
            try:
                columns = packed.wait()
                rows = self._replay(columns, events)
            finally:
                packed.release()
            if rows is not None:
                self._encode(*rows)
        except BaseException:
            self._failed = True
            raise

    def _replay(self, columns: dict[str, np.ndarray], events: list[Any]) -> tuple | None:
        """Apply draws and closes in order; the closed rows, their factor values, host outputs."""
        at: Counter[str] = Counter()

        def take(name: str, n: int) -> np.ndarray:
            start = at[name]
            at[name] += n
            return columns[name][start : start + n]

        closes: list[tuple[_Close, dict[str, np.ndarray], dict[str, tuple]]] = []
        for i, event in enumerate(events):
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                time.sleep(0)  # let the stepping thread have the interpreter
            if isinstance(event, _Track):
                variation = event.variation
                self._factors[variation.key] = _Factor(variation, self.identity.num_envs)
            elif isinstance(event, _Draw):
                prefix = f"draw:{event.key}:"
                values = take(prefix + "values", event.rows)
                env = None if event.build else take(prefix + "env", event.rows)
                steps = (
                    np.full(event.rows, event.step)
                    if event.step is not None
                    else take(prefix + "step", event.rows)
                )
                if event.checked:
                    _check_episodes(event.key, env, take(prefix + "stale", event.rows))
                self._factors[event.key].draw(env, values, steps)
            else:
                fields = {
                    name: take(f"close:{name}", event.rows)
                    for name in ("env", "ids", "length", "terminated", "truncated", "termination")
                }
                if event.success:
                    fields["success"] = take("close:success", event.rows)
                for path in event.device:
                    fields[_column_name(path)] = take(_column_name(path), event.rows)
                env = fields["env"]
                fields["start"] = self._start_time[env]
                self._start_time[env] = event.time
                factors = {key: f.close(env) for key, f in self._factors.items()}
                closes.append((event, fields, factors))
        if not closes:
            return None
        return closes, columns

    def _encode(self, closes: list[tuple[_Close, dict, dict]], columns: dict) -> None:
        def cat(name: str) -> np.ndarray:
            return np.concatenate([fields[name] for _, fields, _ in closes])

        env, ids, length = cat("env").astype(np.int64), cat("ids"), cat("length")
        for key, factor in self._factors.items():
            if factor.scope is Scope.episode:
                count = np.concatenate([factors[key][2] for _, _, factors in closes])
                if (count > 1).any():
                    i = int(np.flatnonzero(count > 1)[0])
                    raise _draw_error(key, int(env[i]), int(ids[i, 0]))
        keep = length > 0
        resets_without_steps = int((~keep).sum())
        if self._quota is not None:
            keep &= ids[:, 0] < self._quota[1][env]
        index = np.flatnonzero(keep)
        n = len(index)
        with self._counts_lock:
            self._counts["resets_without_steps"] += resets_without_steps
        if n == 0:
            return
        batch, undrawn = self._host_batch(closes, cat, env, ids, length, index)
        lines: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "rank": self.rank,
            "seq": np.arange(self.sink.seq, self.sink.seq + n),
            "episode_id": ids[index, 1],
            "env_id": env[index],
            "episode_in_env": ids[index, 0],
        }
        for term in self.terms:
            if term.func in FLUSH_TERMS:
                out = term(batch)
                for key in out:
                    if key in lines:
                        raise ValueError(
                            f"recorder term {term.name!r} writes {key!r}, which is written twice"
                        )
                lines.update(out)
            else:
                lines.update(_nest(self._custom_columns(term, closes, index)))
        blocks = []
        for start in range(0, n, _ENCODE_ROWS):
            rows = slice(start, min(start + _ENCODE_ROWS, n))
            blocks.append(encode_lines(_rows(lines, rows), rows.stop - rows.start))
            time.sleep(0)  # let the stepping thread have the interpreter
        self.sink.write(b"".join(blocks), n)
        self._count(batch, undrawn)

    def _host_batch(
        self, closes, cat, env, ids, length, index
    ) -> tuple[EpisodeBatch, dict[str, int]]:
        """The kept rows as the flush-time terms see them, and how many rows each factor left
        undrawn."""
        termination = np.concatenate(
            [event.names[fields["termination"]] for event, fields, _ in closes]
        )
        success: Any = None
        if all(event.success for event, _, _ in closes):
            success = torch.from_numpy(cat("success")[index].astype(bool))
        elif any(event.success for event, _, _ in closes):
            known = [
                fields["success"].astype(bool).tolist() if event.success else [None] * event.rows
                for event, fields, _ in closes
            ]
            success = [v for part in known for v in part]
            success = [success[i] for i in index.tolist()]
        variations, undrawn = {}, {}
        for key, factor in self._factors.items():
            parts = [factors[key] for _, _, factors in closes]
            drawn = np.concatenate([p[1] for p in parts])[index]
            if factor.scope is Scope.interval:
                values: Any = [row for p in parts for row in p[0]]
                values = [values[i] for i in index.tolist()]
            else:
                values = _stack([p[0] for p in parts], [len(p[1]) for p in parts], index)
            variations[key] = factor.column(values, drawn, encoded=True)
            undrawn[key] = len(drawn) if values is None else int((~drawn).sum())
        end_time = np.concatenate([np.full(event.rows, event.time) for event, _, _ in closes])
        batch = EpisodeBatch(
            env_ids=torch.from_numpy(env[index]),
            episode_id=torch.from_numpy(ids[index, 1]),
            episode_in_env=torch.from_numpy(ids[index, 0]),
            length=torch.from_numpy(length[index]),
            terminated=torch.from_numpy(cat("terminated")[index].astype(bool)),
            truncated=torch.from_numpy(cat("truncated")[index].astype(bool)),
            termination=termination[index].tolist(),
            success=success,
            start_time=cat("start")[index],
            end_time=end_time[index],
            seed=self.seed,
            variations=variations,
            env=self.env,
        )
        return batch, undrawn

    def _custom_columns(self, term: Term, closes, index: np.ndarray) -> dict:
        """The term's columns over the kept rows: buffered tensors and pre-encoded values."""
        paths = dict.fromkeys(
            p[1:]
            for event, _, _ in closes
            for p in (*event.device, *event.host)
            if p[0] == term.name
        )
        out = {}
        for path in paths:
            full = (term.name, *path)
            where = ".".join((f"recorder term {term.name!r}", *path))
            if all(full in event.device for event, _, _ in closes):
                out[path] = np.concatenate([fields[_column_name(full)] for _, fields, _ in closes])[
                    index
                ]
                continue
            texts: list[bytes] = []
            for event, fields, _ in closes:
                if full in event.host:
                    texts += event.host[full]
                elif full in event.device:
                    texts += encode_column(fields[_column_name(full)], event.rows, where)
                else:
                    texts += [b"null"] * event.rows
            out[path] = Encoded(texts[i] for i in index.tolist())
        return out

    def _count(self, batch: EpisodeBatch, undrawn: dict[str, int]) -> None:
        terminated = batch.terminated.numpy()
        truncated = batch.truncated.numpy() & ~terminated
        n = len(batch)
        counts = Counter(
            episodes=n,
            terminated=int(terminated.sum()),
            truncated=int(truncated.sum()),
            aborted=n - int(terminated.sum()) - int(truncated.sum()),
        )
        if isinstance(batch.success, torch.Tensor):
            counts["success"] = int(batch.success.sum())
        elif batch.success is not None:
            counts["success"] = sum(v is True for v in batch.success)
        for key, rows in undrawn.items():
            if rows:
                counts[f"undrawn:{key}"] = rows
        with self._counts_lock:
            self._counts.update(counts)


def _rows(tree: Mapping[str, Any], rows: slice) -> dict[str, Any]:
    """``rows`` of every column of a (nested) mapping of columns; scalars stay scalars."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _rows(value, rows)
        elif isinstance(value, Encoded):
            out[key] = Encoded(value[rows])
        elif isinstance(value, list) or (
            isinstance(value, np.ndarray | torch.Tensor) and value.ndim > 0
        ):
            out[key] = value[rows]
        else:
            out[key] = value
    return out


def _stack(parts: list[np.ndarray | None], rows: list[int], index: np.ndarray) -> Any:
    """The kept rows of per-batch values; a batch closed before any draw has none (zeros)."""
    like = next((p for p in parts if p is not None), None)
    if like is None:
        return None
    filled = [
        np.zeros((n, *like.shape[1:]), like.dtype) if p is None else p
        for p, n in zip(parts, rows, strict=True)
    ]
    return np.concatenate(filled)[index]


def _check_episodes(key: str, env: np.ndarray, stale: np.ndarray) -> None:
    """A draw for an episode its env does not have open cannot be attributed: stop."""
    bad = np.flatnonzero(stale >= 0)
    if len(bad):
        e, episode = int(env[bad[0]]), int(stale[bad[0]])
        raise DrawError(
            f"variation {key!r} was drawn for episode {episode} of env {e}, which is not the "
            f"episode open in env {e}; draw with the env's episode_in_env (after "
            "identity.advance) so each value belongs to exactly one episode"
        )


def _draw_error(key: str, env: int, episode: int) -> DrawError:
    return DrawError(
        f"variation {key!r} was drawn twice for env {env} in its episode {episode}; "
        "episode-scope variations are drawn once per episode"
    )
