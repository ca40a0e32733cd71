"""Replay: run recorded episodes again, each with the factor values it ran with.

A job whose recorder has a ``replay`` block (``+recorder=replay recorder.replay.source=DIR``)
loads the selected episodes of a recording (a run dir, a sweep dir or a records file; selected
with ``where``, a pandas query over its episode frame, and/or explicit ``episodes`` ids). Every
variation the source recorded takes its values from those rows instead of its sampler, through
the variation's ``override``: Isaac Lab event terms and the gymnasium wrapper draw exactly as
they always do. Build-scope values are set once, when the env is built.

- **Rows to env slots.** Rows are dealt round-robin to the env slots as they reset: row ``i``
  runs in slot ``i % num_envs`` (its ``i // num_envs``-th episode), so any number of envs
  works and the episode budget is an exact quota per env (``EpisodeIdentity.quota``): a
  runner loops ``while not identity.quota_met()``. When the rows ran with different
  build-scope values, each set of values gets its own slots (the job needs at least as many
  envs as there are sets). Episodes past the budget run with a row's values and are not
  recorded.
- **Partial replay.** A variation the source did not record (and a task factor observed from
  the simulation) stays live: its sampler draws. The manifest's ``replay`` block lists what
  was replayed and what stayed live, and why.
- **A replay is a recording.** Each record names its source episode in ``replay_of``
  (``{"run_id", "episode_id"}``).
- **A source that does not fit stops the job at start** with a ``ConfigError`` naming the
  factor: a recorded factor the job has no variation for, another kind, shape or scope, a
  value outside the variation's hard bounds or choices, a row without a value.

``arena-recording rerun`` prints the command that replays a recording's selected episodes
(``arena_recording.integrations.hydra_rerun``). The second way to reproduce episodes needs no
file: draws are a pure function of (seed,
variation key, env id, episode in env, draw index), so the same config, seed and ``num_envs``
give every (env, episode) the same factor values again. Use it to rerun a whole job; use
replay to rerun a chosen subset (the failures), on any number of envs, or after the
variations' configs changed.

Example::

    cfg = RecorderCfg(terms=..., replay=ReplayCfg(source="outputs/run", where="success == false"))
    with Session(cfg, "outputs/replay"):
        env = VariationsWrapper(vector_env, variations, seed=0)
        env.reset(seed=0)
        while not env.identity.quota_met():
            env.step(policy(obs))
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arena_recording.core.config import ReplayCfg, Scope, VariationCfg
from arena_recording.core.episodes import EpisodeIdentity
from arena_recording.core.format import FactorSchema
from arena_recording.core.terms import EpisodeBatch, Term
from arena_recording.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from arena_recording.core.variations import VariationBase

REPLAY_TERM = "replay_of"
"""The record column naming each replayed episode's source: ``{"run_id", "episode_id"}``."""
PATH = "recorder.replay"  # where the replay block sits in the config
_BOOLEANS = {"true": True, "false": False}  # JSON spelling in queries: success == false


def select(
    frame: pd.DataFrame, where: str | None, episodes: Sequence[int] | None, path: str = PATH
) -> pd.DataFrame:
    """The rows of an episode frame that ``where`` (a pandas query; ``true``/``false`` may be
    written in lower case) and ``episodes`` (``episode_id`` values) select."""
    if episodes is not None:
        frame = frame[frame["episode_id"].isin([int(e) for e in episodes])]
    if where:
        try:
            frame = frame.query(where, resolvers=[_BOOLEANS])
        except Exception as err:  # noqa: BLE001 - pandas raises many kinds; all are the query's
            raise ConfigError(
                f"{path}.where",
                f"{where!r} is not a query over the episodes ({type(err).__name__}: {err}); "
                "columns with dots need backticks: `variations.gravity` > 30",
            ) from None
    return frame


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _column(frame: pd.DataFrame, schema: FactorSchema) -> list[Any]:
    """A factor's recorded value in each row (``None`` where it has none)."""
    import pandas as pd

    def missing(value: Any) -> bool:
        return value is None or (not isinstance(value, list | dict) and bool(pd.isna(value)))

    name = f"variations.{schema.key}"
    if schema.scope == Scope.interval or schema.categorical or not schema.shape:
        if name not in frame:
            return [None] * len(frame)
        values = frame[name].astype(object).tolist()
        return [None if missing(v) else v for v in values]
    names = [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*schema.shape)]
    if not all(n in frame for n in names):
        return [None] * len(frame)
    matrix = frame[names].to_numpy(np.float64)
    return [None if np.isnan(row).any() else row.reshape(schema.shape) for row in matrix]


class Replay:
    """The selected rows of a source recording, and how they run in this job's envs.

    Built by the session from ``recorder.replay`` (``Replay.load``); the session hands it
    every variation (``attach``) and env identity (``bind``) and records ``term()``.
    """

    def __init__(
        self,
        cfg: ReplayCfg,
        source: Path,
        run_ids: list[str],
        episode_ids: list[int],
        factors: dict[str, tuple[FactorSchema, list[Any]]],
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.run_ids = run_ids
        self.episode_ids = episode_ids
        self.factors = factors
        self.replayed: list[str] = []
        self.live: dict[str, str] = {}
        self._values: dict[str, Any] = {}
        self._checked = False
        self._slots: torch.Tensor | None = None
        build = [key for key, (schema, _) in factors.items() if schema.scope == Scope.build]
        sets = [tuple(_hashable(_plain(factors[k][1][i])) for k in build) for i in range(self.rows)]
        first = {s: i for i, s in reversed(list(enumerate(sets)))}
        order = list(dict.fromkeys(sets))
        self.build_keys = build
        self._group = torch.tensor([order.index(s) for s in sets], dtype=torch.int64)
        self._group_row = torch.tensor([first[s] for s in order], dtype=torch.int64)

    @classmethod
    def load(cls, cfg: ReplayCfg, path: str = PATH) -> Replay:
        """Read the source and select its rows; errors name ``path.source`` / ``path.where``."""
        from arena_recording.analysis.load import load  # pandas and pyarrow: the analysis extra

        if not cfg.source:
            raise ConfigError(f"{path}.source", "a replay needs the recording to replay")
        source = Path(cfg.source).absolute()
        try:
            recording = load(source)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}.source", str(err)) from None
        frame = select(recording.episodes, cfg.where, cfg.episodes, path)
        if frame.empty:
            raise ConfigError(
                f"{path}.where" if cfg.where else f"{path}.episodes",
                f"selects none of the {len(recording.episodes)} episodes of {source}",
            )
        schemas: dict[str, FactorSchema] = {}
        for manifest in recording.manifests:
            for schema in manifest.factors:
                if schema.enabled:
                    schemas.setdefault(schema.key, schema)
        factors = {}
        for key, schema in schemas.items():
            values = _column(frame, schema)
            if all(v is None for v in values):
                continue  # declared, never recorded: nothing to replay
            factors[key] = (schema, values)
        run_ids = frame["run_id"].astype(str).tolist()
        episode_ids = [int(e) for e in frame["episode_id"]]
        for key, (_, values) in factors.items():
            for i, value in enumerate(values):
                if value is None:
                    raise ConfigError(
                        key,
                        f"the replay source has no value of {key!r} for episode {episode_ids[i]} "
                        f"of run {run_ids[i]}; select episodes that recorded it",
                    )
        return cls(cfg, source, run_ids, episode_ids, factors)

    @property
    def rows(self) -> int:
        """The selected episodes: the replay's episode budget."""
        return len(self.run_ids)

    # variations ----------------------------------------------------------------------------

    def attach(self, variation: VariationBase) -> None:
        """Replace ``variation``'s draws with the source's values, or leave it live (and say
        why). A source that does not fit raises ``ConfigError`` naming the factor."""
        key = variation.key
        if not isinstance(variation.cfg, VariationCfg):
            self.live[key] = "observed from the simulation (the task's own event term)"
            return
        if not variation.enabled or key in self.replayed:
            return
        if key not in self.factors:
            self.live[key] = "not recorded by the source: drawn by its sampler"
            return
        schema, values = self.factors[key]
        own = FactorSchema.from_dict(variation.schema())
        for name in ("kind", "shape", "scope"):
            if getattr(schema, name) != getattr(own, name):
                raise ConfigError(
                    key,
                    f"the replay source records {key!r} with {name} {getattr(schema, name)}, "
                    f"this job's variation has {name} {getattr(own, name)}",
                )
        if schema.scope == Scope.interval:
            steps = [
                {int(d["step"]): self._value(variation, own, d["value"], i) for d in row}
                for i, row in enumerate(values)
            ]
            self._values[key] = steps
        else:
            converted = [self._value(variation, own, v, i) for i, v in enumerate(values)]
            self._values[key] = torch.as_tensor(np.stack(converted))
        variation.override = functools.partial(self._draw, key, variation.scope)
        self.replayed.append(key)

    def _value(self, variation: VariationBase, own: FactorSchema, value: Any, row: int) -> Any:
        """A recorded value as the sampler draws it: a choice's index, a bool, floats."""
        where = f"value {value!r} of episode {self.episode_ids[row]} of run {self.run_ids[row]}"
        if own.kind == "boolean":
            return np.bool_(value)
        if own.categorical:
            labels = [_hashable(c) for c in variation.labels or ()]
            if _hashable(value) not in labels:
                raise ConfigError(variation.key, f"{where} is not among the choices {labels}")
            return np.int64(labels.index(_hashable(value)))
        array = np.asarray(value, dtype=np.float64).reshape(own.shape)
        if own.bounds == "hard" and own.low is not None and own.high is not None:
            flat = array.reshape(-1)
            low, high = np.asarray(own.low), np.asarray(own.high)
            slack = 1e-6 * np.maximum(1.0, np.abs([low, high]).max(0))  # float32 rounding
            if ((flat < low - slack) | (flat > high + slack)).any():
                raise ConfigError(
                    variation.key,
                    f"{where} lies outside the variation's bounds [{own.low}, {own.high}]",
                )
        return array

    def check_complete(self) -> None:
        """Every factor the source recorded is replayed: else the episodes cannot run as
        recorded (a ``ConfigError`` naming the factor)."""
        self._checked = True
        for key in self.factors:
            if key not in self.replayed:
                raise ConfigError(
                    key,
                    f"the replay source {self.source} records {key!r}, but this job has no "
                    "enabled variation of that key, so its episodes cannot run as recorded",
                )

    # envs ----------------------------------------------------------------------------------

    def bind(self, identity: EpisodeIdentity) -> None:
        """Deal the rows to the env slots of ``identity`` and set its quota to them."""
        n = identity.num_envs
        groups = len(self._group_row)
        if groups > n:
            raise ConfigError(
                PATH,
                f"the selected episodes ran with {groups} different values of the build-scope "
                f"factors {self.build_keys}; each env is built with one, so replaying them "
                f"needs at least {groups} envs (this job has {n})",
            )
        slot_group = torch.arange(n) % groups
        dealt: list[list[int]] = [[] for _ in range(n)]
        for g in range(groups):
            slots = (slot_group == g).nonzero().flatten().tolist()
            rows = (self._group == g).nonzero().flatten().tolist()
            for i, row in enumerate(rows):
                dealt[slots[i % len(slots)]].append(row)
        width = max(1, *(len(d) for d in dealt))
        table = self._group_row[slot_group].unsqueeze(1).repeat(1, width)
        for slot, rows in enumerate(dealt):
            table[slot, : len(rows)] = torch.tensor(rows, dtype=torch.int64)
        self._slots = table
        self._slot_group = slot_group
        self._count = torch.tensor([len(d) for d in dealt], dtype=torch.int64)
        self._base = identity.episode_in_env.cpu().clone()
        identity.quota = identity.episode_in_env + self._count.to(identity.device)

    def row_of(
        self, env_ids: torch.Tensor, episode_in_env: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The source row each (env, episode) runs, and whether it is inside the budget."""
        if self._slots is None:
            raise RuntimeError("a replay draws for an env once the env is bound to the session")
        env = env_ids.cpu().long()
        k = episode_in_env.cpu().long() - self._base[env]
        valid = (k >= 0) & (k < self._count[env])
        return self._slots[env, k.clamp(0, self._slots.shape[1] - 1)], valid

    def _draw(
        self,
        key: str,
        scope: Scope,
        env_ids: torch.Tensor | None,
        *,
        episode_in_env: torch.Tensor | None,
        step: torch.Tensor | None,
        device: torch.device | str | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """A variation's values for ``env_ids``, from the rows their episodes run."""
        if scope is Scope.build:
            if env_ids is None:
                if len(self._group_row) > 1:
                    raise ConfigError(
                        key,
                        "a build draw shared by every env cannot hold one "
                        "value per env slot: select episodes of one build",
                    )
                rows = self._group_row[:1]
            else:
                if self._slots is None:
                    raise RuntimeError("a replay draws for an env once it is bound to the session")
                rows = self._group_row[self._slot_group[env_ids.cpu().long()]]
        else:
            rows, _ = self.row_of(env_ids, episode_in_env)
        values = self._values[key]
        if scope is Scope.interval:
            steps = step.cpu().tolist() if isinstance(step, torch.Tensor) else [step] * len(rows)
            picked = []
            for row, s in zip(rows.tolist(), steps, strict=True):
                if int(s) not in values[row]:
                    raise ConfigError(
                        key,
                        f"episode {self.episode_ids[row]} of run {self.run_ids[row]} drew it at "
                        f"steps {sorted(values[row])}, not at step {int(s)}: the replayed "
                        "episode has diverged",
                    )
                picked.append(values[row][int(s)])
            out = torch.as_tensor(np.stack(picked))
        else:
            out = values[rows]
        if out.is_floating_point():
            out = out.to(dtype)
        if env_ids is None:
            out = out[0]
        return out.to(device) if device is not None else out

    # records and manifest ------------------------------------------------------------------

    def replay_of(self, batch: EpisodeBatch) -> dict[str, Any]:
        """The source episode of each record (a recorder term; the session adds it)."""
        if not self._checked:
            self.check_complete()
        rows, valid = self.row_of(batch.env_ids, batch.episode_in_env)
        pairs = [(r, v) for r, v in zip(rows.tolist(), valid.tolist(), strict=True)]
        run = [self.run_ids[r] if v else None for r, v in pairs]
        episode = [self.episode_ids[r] if v else None for r, v in pairs]
        return {REPLAY_TERM: {"run_id": run, "episode_id": episode}}

    def term(self) -> Term:
        return Term(REPLAY_TERM, self.replay_of, {})

    def describe(self) -> dict[str, Any]:
        """The manifest's ``replay`` block."""
        return {
            "source": str(self.source),
            "where": self.cfg.where,
            "episodes": self.cfg.episodes,
            "rows": self.rows,
            "runs": sorted(set(self.run_ids)),
            "replayed": list(self.replayed),
            "live": dict(self.live),
        }


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value
