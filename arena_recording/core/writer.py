"""The record writer: turns a flush's host columns and event log into lines of the records file.

The recorder (``arena_recording.core.recorder``) keeps, between two flushes, what happened on
the device: draws and episode closes, in order, as buffered columns and a list of events. At a
flush, an ``EpisodeWriter`` replays those events (which values each episode ran with, whether an
episode-scope variation was drawn twice), runs the built-in terms ``core`` and ``variations`` on
the host columns, encodes the lines and appends them to the records file.

Where it runs is the recorder's ``writer`` setting. ``thread``: on the recorder's flushing
thread. ``process``: in a child process (``WriterProcess``), which takes the replay and the
encoding (a few microseconds of Python per record) off the interpreter lock of the process that
steps the env: a Python thread busy with them would delay every GPU launch of the stepping
thread. The child dies with its parent (a hard kill loses what it had not yet written, as
with the thread), writes through the parent's descriptor of the records file (so the file's
lock lasts until both are gone: a resume cannot start while a dying writer still writes), and
leaves SIGINT and SIGTERM to the parent, which flushes everything first.

Example (what the recorder's flushing thread does)::

    writer = EpisodeWriter(num_envs=4, terms=terms, sink=sink, run_id="r", rank=0, seed=0)
    writer.write(columns, events, quota=None)   # the lines of the episodes closed since
    writer = WriterProcess(dict(num_envs=4, terms=terms, run_id="r", rank=0, seed=0), sink)
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arena_recording.core import terms as builtin
from arena_recording.core.encoding import Encoded, encode_column, encode_lines
from arena_recording.core.format import SCHEMA_VERSION
from arena_recording.core.sampling import Scope
from arena_recording.core.sinks import JsonlSink
from arena_recording.core.terms import EpisodeBatch, Term

FLUSH_TERMS = (builtin.core, builtin.variations)
"""Term functions that run at flush time on the buffered columns instead of in ``close``."""

# A thread writer holds the interpreter lock while it replays and encodes; it gives it up this
# often so the stepping thread never waits long for it.
_YIELD_EVERY = 64  # events replayed
_ENCODE_ROWS = 1024  # records encoded


class DrawError(RuntimeError):
    """A draw that cannot be attributed to exactly one episode."""


# the event log: what happened between two flushes, in order -----------------------------------


@dataclass(frozen=True)
class Track:
    """From here on, the draws of the variation ``key`` are recorded."""

    key: str
    scope: Scope
    labels: list[Any] | None  # what a choice's drawn indices stand for


@dataclass
class DrawEvent:
    key: str
    rows: int
    build: bool  # one value for every env (``env_ids`` was None)
    step: int | None  # the draw index when it was a plain int (else a buffered column)
    checked: bool = False  # its episodes were compared with the identity (a buffered column)
    shared: bool = False  # its env ids (and check) are the previous draw's: one reset batch


@dataclass
class CloseEvent:
    rows: int
    time: float
    names: np.ndarray
    success: bool
    host: dict[tuple[str, ...], Encoded] = field(default_factory=dict)
    device: tuple[tuple[str, ...], ...] = ()


class _Factor:
    """What one variation drew for the open episode of every env (host side, at flush)."""

    def __init__(self, track: Track, num_envs: int) -> None:
        self.key = track.key
        self.scope = track.scope
        self.values: np.ndarray | None = None
        self.count = np.zeros(num_envs, dtype=np.int64)  # draws in the open episode
        self.ever = np.zeros(num_envs, dtype=bool)
        self.interval: dict[int, list[dict[str, Any]]] = {}
        self.labels = None if track.labels is None else np.array(track.labels, dtype=object)

    def draw(self, env: np.ndarray | None, values: np.ndarray, steps: np.ndarray | int) -> None:
        """Keep a draw's values for the open episodes of ``env`` (``None``: every env);
        ``steps``, the draw index of each row (or of all), matters at interval scope only."""
        if self.scope is Scope.interval:
            steps = np.broadcast_to(steps, len(values))
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


def flatten(out: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in out.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, (*prefix, key)))
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


def column_name(path: tuple[str, ...]) -> str:
    return "term:" + "\x00".join(path)


class EpisodeWriter:
    """Replays flushes and writes their records; the host half of one env's recorder.

    ``terms`` are the session's terms in order: the built-in flush-time terms as ``Term``s, a
    custom term as its name (its columns were kept when its episodes closed)."""

    def __init__(
        self,
        *,
        num_envs: int,
        terms: Sequence[Term | str],
        sink: JsonlSink,
        run_id: str,
        rank: int,
        seed: int,
        start_time: float | None = None,
        env: Any = None,
    ) -> None:
        self.num_envs = num_envs
        self.terms = list(terms)
        self.sink = sink
        self.run_id = run_id
        self.rank = rank
        self.seed = seed
        self.env = env
        self._factors: dict[str, _Factor] = {}
        self._start_time = np.full(num_envs, time.time() if start_time is None else start_time)
        self._quota: np.ndarray | None = None
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._failed = False

    @property
    def counts(self) -> Counter[str]:
        """Episode counts of everything written so far."""
        with self._counts_lock:
            return Counter(self._counts)

    @property
    def seq(self) -> int:
        """Records in the file (all segments)."""
        return self.sink.seq

    def peek(self, env: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Start times and variation columns of the open episodes of ``env``."""
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

    def check_open_episodes(self, identity_episodes: np.ndarray) -> None:
        """An episode-scope variation drawn twice in an episode still open: ``DrawError``."""
        for factor in self._factors.values():
            if factor.scope is Scope.episode and (factor.count > 1).any():
                env = int(np.flatnonzero(factor.count > 1)[0])
                raise _draw_error(factor.key, env, int(identity_episodes[env]))

    def close(self) -> None:
        """Nothing to release here (the session closes the file)."""

    def write(
        self, columns: dict[str, np.ndarray], events: list[Any], quota: np.ndarray | None
    ) -> None:
        """Replay one flush's events over its columns and write the closed episodes' lines.
        ``quota`` (per env, or ``None``) drops the episodes past an env's quota."""
        if self._failed:  # an earlier flush failed: its state is not to be built on
            return
        self._quota = quota
        try:
            rows = self._replay(columns, events)
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

        closes: list[tuple[CloseEvent, dict[str, np.ndarray], dict[str, tuple]]] = []
        shared_env = None
        for i, event in enumerate(events):
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                time.sleep(0)  # let the stepping thread have the interpreter
            if isinstance(event, Track):
                self._factors[event.key] = _Factor(event, self.num_envs)
            elif isinstance(event, DrawEvent):
                prefix = f"draw:{event.key}:"
                values = take(prefix + "values", event.rows)
                if event.build:
                    env = None
                elif event.shared:
                    env = shared_env
                else:
                    env = shared_env = take(prefix + "env", event.rows)
                    if event.checked:
                        drawn = take(prefix + "drawn", event.rows)
                        _check_episodes(event.key, env, drawn, take(prefix + "open", event.rows))
                steps = event.step if event.step is not None else take(prefix + "step", event.rows)
                self._factors[event.key].draw(env, values, steps)
            else:
                fields = {
                    name: take(f"close:{name}", event.rows)
                    for name in ("env", "ids", "length", "terminated", "truncated", "termination")
                }
                if event.success:
                    fields["success"] = take("close:success", event.rows)
                for path in event.device:
                    fields[column_name(path)] = take(column_name(path), event.rows)
                env = fields["env"]
                fields["start"] = self._start_time[env]
                self._start_time[env] = event.time
                factors = {key: f.close(env) for key, f in self._factors.items()}
                closes.append((event, fields, factors))
        if not closes:
            return None
        return closes, columns

    def _encode(self, closes: list[tuple[CloseEvent, dict, dict]], columns: dict) -> None:
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
            keep &= ids[:, 0] < self._quota[env]
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
            if isinstance(term, str):  # a custom term: its columns were kept at close
                lines.update(_nest(self._custom_columns(term, closes, index)))
                continue
            out = term(batch)
            for key in out:
                if key in lines:
                    raise ValueError(
                        f"recorder term {term.name!r} writes {key!r}, which is written twice"
                    )
            lines.update(out)
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

    def _custom_columns(self, term: str, closes, index: np.ndarray) -> dict:
        """The term's columns over the kept rows: buffered tensors and pre-encoded values."""
        paths = dict.fromkeys(
            p[1:] for event, _, _ in closes for p in (*event.device, *event.host) if p[0] == term
        )
        out = {}
        for path in paths:
            full = (term, *path)
            where = ".".join((f"recorder term {term!r}", *path))
            if all(full in event.device for event, _, _ in closes):
                out[path] = np.concatenate([fields[column_name(full)] for _, fields, _ in closes])[
                    index
                ]
                continue
            texts: list[bytes] = []
            for event, fields, _ in closes:
                if full in event.host:
                    texts += event.host[full]
                elif full in event.device:
                    texts += encode_column(fields[column_name(full)], event.rows, where)
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


def _check_episodes(key: str, env: np.ndarray, drawn: np.ndarray, open_: np.ndarray) -> None:
    """A draw for an episode its env does not have open cannot be attributed: stop."""
    bad = np.flatnonzero(drawn != open_)
    if len(bad):
        e, episode = int(env[bad[0]]), int(drawn[bad[0]])
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


# the writer process ---------------------------------------------------------------------------


class WriterProcess:
    """An ``EpisodeWriter`` in a child process, called from the recorder's flushing thread.

    The same calls as ``EpisodeWriter``; each waits for the child's answer (on the flushing
    thread, never the stepping one), which brings the records written and the counts. ``sink``
    is the parent's: it keeps the file's lock, and its ``seq`` and ``error`` follow the child's.
    The child is a fresh interpreter running this module (not a fork, and not a
    ``multiprocessing`` child, which would import the user's main script again).
    """

    def __init__(self, spec: Mapping[str, Any], sink: JsonlSink) -> None:
        self.sink = sink
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # one call at a time (the flushing thread, a term's peek)
        ours, theirs = socket.socketpair()
        fds = [str(theirs.fileno()), str(sink.fileno())]
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, *fds, str(os.getpid())],
                pass_fds=[theirs.fileno(), sink.fileno()],
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # our modules
            )
        self._conn = Connection(ours.detach())
        # waited for (the child's imports take a second or two): a writer still starting while
        # flushes pile up would hold records longer than ``flush_every_s``
        self._call("start", dict(spec), str(sink.path), sink.fsync, sink.seq)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self._counts)

    @property
    def seq(self) -> int:
        return self.sink.seq

    def write(
        self, columns: dict[str, np.ndarray], events: list[Any], quota: np.ndarray | None
    ) -> None:
        self._call("write", columns, events, quota)

    def peek(self, env: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        return self._call("peek", env)

    def check_open_episodes(self, identity_episodes: np.ndarray) -> None:
        self._call("check_open_episodes", identity_episodes)

    def close(self) -> None:
        """Stop the child once it has written everything it was sent."""
        try:
            if self._process.poll() is None:
                self._call("stop")
        finally:
            self._conn.close()
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def _call(self, name: str, *args: Any) -> Any:
        """Send one call and wait for its answer; raise the error the child sent back."""
        try:
            with self._lock:
                self._conn.send((name, *args))
                ok, value, self.sink.seq, self._counts = self._conn.recv()
        except (EOFError, OSError) as err:
            code = self._process.poll()
            raise RuntimeError(
                f"the arena-recording writer process ended (exit code {code}); the records "
                f"written before are whole, the last flush's are missing ({err!r})"
            ) from None
        if not ok:
            if isinstance(value, OSError):
                self.sink.error = value  # the session reports it as a failed write
            raise value
        return value


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 - any failure to round-trip: send its text instead
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


# The child, before any slow import: the kernel kills it when its parent dies (Linux), it
# leaves Ctrl-C and SIGTERM to the parent (which flushes everything through it), then serves.
_CHILD = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[3]):  # the parent died before that
    os._exit(1)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from arena_recording.core.writer import serve
serve(int(sys.argv[1]), int(sys.argv[2]))
"""


def serve(fd: int, records: int) -> None:
    """The child's loop: answer the parent's calls until it says stop or goes away. ``fd``
    is its end of the connection, ``records`` the records file as the parent opened it."""
    conn = Connection(fd)
    writer: EpisodeWriter | None = None
    while True:
        try:
            name, *args = conn.recv()
        except EOFError:
            break
        try:
            if name == "start":
                spec, path, fsync, seq = args
                sink = JsonlSink(Path(path), fsync=fsync, start_seq=seq, inherited=records)
                writer = EpisodeWriter(sink=sink, **spec)
                value = None
            elif name == "stop":
                value = None
            else:
                value = getattr(writer, name)(*args)
            reply = (True, value)
        except BaseException as err:  # noqa: BLE001 - sent to the parent, which raises it
            reply = (False, _picklable(err))
        seq, counts = (0, Counter()) if writer is None else (writer.seq, writer.counts)
        conn.send((*reply, seq, counts))
        if name == "stop":
            break
    if writer is not None:
        writer.sink.close()
