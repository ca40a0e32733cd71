"""The episode recorder: attributes draws to open episodes and writes a record per finished one.

An adapter (gymnasium wrapper, Isaac Lab recorder term) calls ``close`` with how the current
episodes of a reset batch ended, before it advances their identity and runs the reset. The
recorder evaluates every term once for the whole batch, writes one line per episode that took
at least one step, and evicts those episodes' draws, so memory does not grow with the run.

Example (what an adapter does at each reset of ``env_ids``)::

    recorder = session.bind(identity, env=env, seed=seed)
    recorder.close(EpisodeEnd(env_ids, length, terminated, truncated, termination))
    identity.advance(env_ids, started=length > 0)
    variation.sample(env_ids, seed=seed, episode_in_env=identity.episode_in_env[env_ids])
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arena_recording.core.encoding import encode_lines, encode_tree
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.format import IDENTITY_FIELDS, SCHEMA_VERSION
from arena_recording.core.sampling import Draw, Scope
from arena_recording.core.terms import EpisodeBatch, Term
from arena_recording.core.variations import VariationBase

if TYPE_CHECKING:
    from arena_recording.core.sinks import JsonlSink


class DrawError(RuntimeError):
    """A draw that cannot be attributed to exactly one episode."""


class _Factor:
    """What one variation drew for the open episodes of every env."""

    def __init__(self, variation: VariationBase, num_envs: int, device: torch.device) -> None:
        self.variation = variation
        self.values: torch.Tensor | None = None
        self.drawn = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self.interval: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        labels = variation.labels
        self.labels = None if labels is None else np.array(labels, dtype=object)

    def store(self, draw: Draw) -> None:
        if draw.scope is Scope.INTERVAL:
            steps = torch.as_tensor(draw.draw_index).expand(draw.env_ids.shape[0])
            self.interval.append(
                tuple(t.detach().cpu().numpy() for t in (draw.env_ids, steps, draw.values))
            )
            return
        device = self.drawn.device
        if self.values is None:
            shape = (self.drawn.shape[0], *self.variation.sampler.shape)
            self.values = torch.zeros(shape, dtype=draw.values.dtype, device=device)
        if draw.env_ids is None:  # one build-time value for every env
            self.values[:] = draw.values.to(device)
            self.drawn[:] = True
            return
        # index_copy_ / index_fill_ rather than x[ids] = v: the latter may wait on busy threads
        env_ids = draw.env_ids.to(device)
        self.values.index_copy_(0, env_ids, draw.values.to(device, self.values.dtype))
        self.drawn.index_fill_(0, env_ids, True)

    def column(self, env_ids: torch.Tensor) -> Any:
        if self.variation.scope is Scope.INTERVAL:
            return self._interval_column(env_ids.cpu().numpy())
        if self.values is None:
            return None
        values = self.values.index_select(0, env_ids).cpu().numpy()
        drawn = self.drawn.index_select(0, env_ids).cpu().numpy()
        if self.labels is not None:
            values = self.labels[values]
        if drawn.all():
            return values
        rows = values.tolist()
        return [v if d else None for v, d in zip(rows, drawn.tolist(), strict=True)]

    def _interval_column(self, env_ids: np.ndarray) -> list[list[dict[str, Any]]]:
        rows: dict[int, list[dict[str, Any]]] = {int(e): [] for e in env_ids.tolist()}
        for ids, steps, values in self.interval:
            for e, s, v in zip(ids.tolist(), steps.tolist(), values.tolist(), strict=True):
                if e in rows:
                    rows[e].append({"step": s, "value": v})
        return [rows[int(e)] for e in env_ids.tolist()]

    def evict(self, env_ids: torch.Tensor) -> None:
        """Forget the episode draws of ``env_ids``; build-scope values stay for the next ones."""
        if self.variation.scope is Scope.EPISODE:
            self.drawn.index_fill_(0, env_ids, False)
        elif self.interval:
            closed = env_ids.cpu().numpy()
            kept = []
            for ids, steps, values in self.interval:
                keep = ~np.isin(ids, closed)
                if keep.any():
                    kept.append((ids[keep], steps[keep], values[keep]))
            self.interval = kept


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
    ) -> None:
        self.identity = identity
        self.terms = list(terms)
        self.sink = sink
        self.run_id = run_id
        self.rank = rank
        self.seed = seed
        self.env = env
        self.set_termination_names(termination_names)
        self.counts: Counter[str] = Counter()
        self._factors: dict[str, _Factor] = {}
        self._start_time = np.full(identity.num_envs, time.time())

    def set_termination_names(self, names: Sequence[str]) -> None:
        """Names that ``EpisodeEnd.termination`` indexes (adapters may learn them late)."""
        self.termination_names = np.array([*names, None], dtype=object)

    def track(self, variation: VariationBase) -> None:
        """Record ``variation``'s draws from now on (enabled variations only)."""
        if variation.enabled and variation.key not in self._factors:
            self._factors[variation.key] = _Factor(
                variation, self.identity.num_envs, self.identity.device
            )

    def on_draw(self, draw: Draw) -> None:
        """Attribute ``draw`` to the episodes open in its envs."""
        factor = self._factors.get(draw.key)
        if factor is None:
            return
        if draw.scope is Scope.EPISODE and draw.env_ids is not None:
            env_ids = draw.env_ids.to(self.identity.device)
            again = factor.drawn.index_select(0, env_ids)
            if bool(again.any()):
                env = int(env_ids[again.nonzero()[0, 0]])
                episode = int(self.identity.episode_in_env[env])
                raise DrawError(
                    f"variation {draw.key!r} was drawn twice for env {env} in its episode "
                    f"{episode}; episode-scope variations are drawn once per episode"
                )
        factor.store(draw)

    def close(self, end: EpisodeEnd) -> None:
        """Write a record for every episode in ``end`` that took a step (and is within the
        quota, if any); evict their draws."""
        env_ids = end.env_ids.to(self.identity.device)
        started = (end.length > 0).to(self.identity.device)
        now = time.time()
        index = (started & self.identity.in_quota(env_ids)).nonzero().squeeze(1)
        self.counts["resets_without_steps"] += int((~started).sum())
        if index.shape[0]:
            self._write(end, env_ids, index, now)
        for factor in self._factors.values():
            factor.evict(env_ids)
        self._start_time[env_ids.cpu().numpy()] = now

    def _write(
        self, end: EpisodeEnd, env_ids: torch.Tensor, index: torch.Tensor, now: float
    ) -> None:
        ids = env_ids[index]
        ids_np = ids.cpu().numpy()
        termination = end.termination.to(self.identity.device)[index].cpu().numpy()
        batch = EpisodeBatch(
            env_ids=ids,
            episode_id=self.identity.episode_id.index_select(0, ids),
            episode_in_env=self.identity.episode_in_env.index_select(0, ids),
            length=end.length.to(self.identity.device)[index],
            terminated=end.terminated.to(self.identity.device)[index],
            truncated=end.truncated.to(self.identity.device)[index],
            termination=self.termination_names[termination].tolist(),
            success=None if end.success is None else end.success.to(self.identity.device)[index],
            start_time=self._start_time[ids_np],
            end_time=now,
            seed=self.seed,
            variations={key: f.column(ids) for key, f in self._factors.items()},
            env=self.env,
        )
        n = len(batch)
        columns: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "rank": self.rank,
            "seq": np.arange(self.sink.seq, self.sink.seq + n),
            "episode_id": batch.episode_id,
            "env_id": ids_np,
            "episode_in_env": batch.episode_in_env,
        }
        owners = dict.fromkeys(IDENTITY_FIELDS, "the record identity")
        for term in self.terms:
            out = term(batch)
            for key in out:
                if key in owners:
                    raise ValueError(
                        f"recorder term {term.name!r} writes {key!r}, "
                        f"which {owners[key]} already writes"
                    )
                owners[key] = f"term {term.name!r}"
            columns.update(encode_tree(out, n, f"recorder term {term.name!r}"))
        self.sink.write(encode_lines(columns, n))
        self._count(batch)

    def _count(self, batch: EpisodeBatch) -> None:
        success = torch.zeros_like(batch.terminated) if batch.success is None else batch.success
        flags = [batch.terminated, batch.truncated & ~batch.terminated, success.bool()]
        terminated, truncated, successes = torch.stack(flags).sum(1).tolist()  # one transfer
        self.counts["episodes"] += len(batch)
        self.counts["terminated"] += terminated
        self.counts["truncated"] += truncated
        self.counts["aborted"] += len(batch) - terminated - truncated
        if batch.success is not None:
            self.counts["success"] += successes
        for key, column in batch.variations.items():
            if column is None or (isinstance(column, list) and None in column):
                self.counts[f"undrawn:{key}"] += (
                    len(batch) if column is None else column.count(None)
                )
