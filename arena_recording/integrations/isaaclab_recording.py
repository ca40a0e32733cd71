"""Isaac Lab adapter, recording: the episode identity of an env and the hook that records it.

Recording must leave the task alone. Isaac Lab's own ``RecorderManager`` does not: with any
recorder term active, every step computes the observations a second time, and with
observation noise on that shifts the torch random stream the task's events draw from. So the
recorder hooks the env instance instead: ``instrument`` adds one ``startup`` event term whose
constructor (run while the env is built, before any startup event draws) binds the env to the
active session and wraps that env's ``_reset_idx`` and ``close``. Before each reset the hook
closes the episodes being reset, while ``episode_length_buf`` and the outcome (termination
manager, or ``reset_terminated`` / ``reset_time_outs`` of a ``DirectRLEnv``) are intact;
nothing else runs per step and no random number is drawn.

Outcome per record: ``terminated`` / ``truncated`` as the env reports them; ``termination``
names every termination term that fired, joined with ``+`` in the task's term order
(``"torso_height+time_out"``), ``None`` if none fired (an episode cut by ``env.reset()`` or
``env.close()``). A ``DirectRLEnv`` has no termination terms: its two outcomes act as terms
named ``terminated`` and ``time_out``.

Success (``success_terms``): the termination terms whose firing counts as success. By
default the term named ``success`` when the task has one (Isaac Lab's own convention), else
there is no success column. Isaac Lab's locomotion and classic tasks (Ant, Humanoid,
Cartpole) count survival as success: their ``success_rate`` metric is the fraction of
episodes that timed out; ``success_terms=("time_out",)`` records the same. The names are
checked in ``instrument()``, against the task's termination terms.

Example (the one line that instruments an env cfg)::

    env = ManagerBasedRLEnv(instrument(env_cfg))  # records only while a session is active
    env = gym.make("Isaac-Ant", cfg=instrument(env_cfg, success_terms=("time_out",)))
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from isaaclab.envs import DirectRLEnv, DirectRLEnvCfg, ManagerBasedEnv, ManagerBasedRLEnvCfg
from isaaclab.managers import EventTermCfg, ManagerTermBase, TerminationTermCfg
from isaaclab.utils import configclass

from arena_recording.core.config import Scope
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.recorder import EpisodeRecorder
from arena_recording.core.sampling import SamplerBase
from arena_recording.core.session import Session, active_session, resolve_seed
from arena_recording.core.variations import VariationBase, draws_for, unique_keys
from arena_recording.errors import ArenaRecordingError, ConfigError

log = logging.getLogger(__name__)

EnvIds = torch.Tensor | Sequence[int] | slice | None
RLEnv = ManagerBasedEnv | DirectRLEnv

HOOK_TERM = "arena_recording"
"""Name of the event term ``instrument`` adds to ``env_cfg.events``."""
DIRECT_OUTCOMES = ("terminated", "time_out")
"""The termination names of a ``DirectRLEnv`` (its ``reset_terminated`` / ``reset_time_outs``)."""
MAX_JOINED_TERMS = 12
"""Up to this many termination terms, ``termination`` names every term that fired (one name per
combination, 2**n - 1 of them); with more, it names the first that fired."""

_ATTRIBUTE = "_arena_recording_episodes"
_live: weakref.WeakSet[EnvRecording] = weakref.WeakSet()


def env_ids_tensor(env: RLEnv, env_ids: EnvIds) -> torch.Tensor:
    """Env ids as a long tensor on the env's device (Isaac Lab passes None, slices, lists)."""
    if env_ids is None or isinstance(env_ids, slice):
        return torch.arange(env.num_envs, device=env.device)[env_ids or slice(None)]
    return torch.as_tensor(env_ids, device=env.device).long()


class EnvEpisodes:
    """The episode identity of one env, advanced exactly once per reset, and its variations.

    Whoever sees a reset first (the recording hook before it, or the first variation event
    during it) advances the identity; ``episode_length_buf`` is still intact at both points.
    Draws are therefore the same with recording on or off. The env's variation events and
    task factors register here (``add_variation``): the recording binds exactly these, so
    another env's draws never reach this env's records.

    The variation events of a reset share one draw (``batch_draws``; on CUDA one kernel): Isaac
    Lab calls them one after the other with the same env ids, so the first computes the values
    of all of them and keeps them for the others until the next batch.
    """

    def __init__(self, env: RLEnv) -> None:
        self.env = env
        self.seed = resolve_seed(env.cfg.seed)  # fixed for the env: every draw uses it
        self.identity = EpisodeIdentity(env.num_envs, env.device)
        self.variations: list[VariationBase] = []
        self.recording: EnvRecording | None = None
        self._advanced_at = torch.full((env.num_envs,), -1, dtype=torch.long, device=env.device)
        self._batched: list[VariationBase] = []
        self._batch: _Batch | None = None
        # Isaac Lab hands one env ids object to the recording hook and every event term of a
        # reset: its tensor (``ids``), whether it was advanced in this step, and the episodes
        # open in it are kept for the batch.
        self._ids: tuple[EnvIds, int, torch.Tensor] | None = None
        self._opened: tuple[torch.Tensor, int] | None = None
        self._open: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def add_variation(self, variation: VariationBase, *, batched: bool = False) -> None:
        """``variation`` is drawn by this env (its key unique here, else a ``ConfigError``);
        recorded with its episodes when the env records, also if it records already.
        ``batched``: its episode draws take their values from ``batch_draws``."""
        unique_keys([*self.variations, variation], "this env")
        self.variations.append(variation)
        if batched:
            self._batched.append(variation)
        if self.recording is not None and self.recording.recorder is not None:
            self.recording.session.attach(variation, self.recording.recorder)

    def ids(self, env_ids: EnvIds) -> torch.Tensor:
        """``env_ids`` as a long tensor on the env's device (``env_ids_tensor``), one tensor
        per object Isaac Lab passes in a step: the hook and the event terms of a reset share
        it, and with it their episodes (``open_episodes``) and the recorder's log entries."""
        step = int(self.env.common_step_counter)
        cached = self._ids
        if cached is not None and cached[0] is env_ids and cached[1] == step:
            return cached[2]
        ids = env_ids_tensor(self.env, env_ids)
        self._ids = (env_ids, step, ids)
        return ids

    def lengths(self, env_ids: torch.Tensor) -> torch.Tensor:
        return self.env.episode_length_buf[env_ids]

    def advance(self, env_ids: torch.Tensor) -> None:
        """Open the next episodes of ``env_ids`` unless this reset already did (the same
        tensor in the same step is known at once; other envs per env, on the device)."""
        step = int(self.env.common_step_counter)
        opened = self._opened
        if opened is not None and opened[0] is env_ids and opened[1] == step:
            return
        fresh = self._advanced_at.index_select(0, env_ids) != step
        self.identity.advance(env_ids, started=(self.lengths(env_ids) > 0) & fresh)
        self._advanced_at.index_fill_(0, env_ids, step)
        self._opened = (env_ids, step)

    def open_episodes(self, env_ids: torch.Tensor) -> torch.Tensor:
        """The episodes open in ``env_ids``: one tensor for every draw of a reset batch, so
        that the recorder checks and logs their episodes once per batch."""
        cached = self._open
        if cached is not None and cached[0] is env_ids and cached[1] == self.identity.version:
            return cached[2]
        episodes = self.identity.episode_in_env[env_ids]
        self._open = (env_ids, self.identity.version, episodes)
        return episodes

    def batch_draws(
        self, variation: VariationBase, env_ids: torch.Tensor, batch: object
    ) -> torch.Tensor | None:
        """The values of ``variation``'s episode draw for ``env_ids`` (after ``advance``),
        computed with those of every enabled batched episode variation at the first such
        draw of a step; ``None``: draw it alone.

        ``batch`` is the env ids object Isaac Lab passed the event term: every term of one
        reset gets the same one. Another object in the same step (a second reset, a term with
        a cooldown) draws alone, so no batch is ever computed twice per step. Only the latest
        batch is kept, with ``batch`` itself, so its id cannot be reused while it is compared.
        """
        step = int(self.env.common_step_counter)
        cached = self._batch
        if cached is None or cached.step != step:
            drawn = [
                v for v in self._batched if v.enabled and v.scope is Scope.episode and v.batchable
            ]
            if not any(v is variation for v in drawn):
                return None
            episodes = self.open_episodes(env_ids)
            values = draws_for(drawn, env_ids, seed=self.seed, episode_in_env=episodes)
            by_sampler = {v.sampler: x for v, x in values.items()}
            self._batch = cached = _Batch(batch, step, by_sampler)
        elif cached.batch is not batch:
            return None
        # None: not in the batch, or reconfigured (a new sampler) or overridden since
        return cached.values.get(variation.sampler) if variation.batchable else None


@dataclasses.dataclass(frozen=True, slots=True)
class _Batch:
    """The values of one reset batch's variation events (``EnvEpisodes.batch_draws``)."""

    batch: object
    step: int
    values: dict[SamplerBase, torch.Tensor]  # by the sampler that drew them


def env_episodes(env: Any) -> EnvEpisodes:
    """The ``EnvEpisodes`` of ``env`` (or of the Isaac Lab env inside a gymnasium wrapper),
    created on first use and kept on the env itself."""
    env = env.unwrapped
    episodes = getattr(env, _ATTRIBUTE, None)
    if episodes is None:
        episodes = EnvEpisodes(env)
        setattr(env, _ATTRIBUTE, episodes)
    return episodes


# --- termination names and success -----------------------------------------------------------


def termination_names(env_cfg: ManagerBasedRLEnvCfg | DirectRLEnvCfg) -> list[str]:
    """The termination terms of the task, in the order its termination manager keeps them."""
    if isinstance(env_cfg, DirectRLEnvCfg):
        return list(DIRECT_OUTCOMES)
    terms = env_cfg.terminations
    items = terms.items() if isinstance(terms, dict) else vars(terms).items()
    return [name for name, term in items if isinstance(term, TerminationTermCfg)]


def resolve_success_terms(names: Sequence[str], success_terms: Sequence[str] | None) -> list[str]:
    """``success_terms`` checked against the task's termination ``names``; by default the
    term ``success`` when there is one, else none (no success column)."""
    if success_terms is None:
        return ["success"] if "success" in names else []
    if isinstance(success_terms, str):
        success_terms = [success_terms]
    unknown = [n for n in success_terms if n not in names]
    if unknown:
        raise ConfigError(
            "success_terms",
            f"{unknown} are not termination terms of this task, which has {list(names)}. "
            "Isaac Lab's locomotion and classic tasks count survival as success: "
            "success_terms=['time_out'].",
        )
    return list(success_terms)


def joined_names(names: Sequence[str]) -> list[str]:
    """Names of every non-empty combination of ``names``, indexed by bit mask minus one."""
    return [
        "+".join(itertools.compress(names, ((mask >> i) & 1 for i in range(len(names)))))
        for mask in range(1, 2 ** len(names))
    ]


class _Outcome:
    """How the episodes of a reset batch ended: one column per termination name."""

    def __init__(self, env: RLEnv, names: Sequence[str], success_terms: Sequence[str]) -> None:
        self.env = env
        self.names = list(names)
        self.joined = len(self.names) <= MAX_JOINED_TERMS
        self.record_names = joined_names(self.names) if self.joined else self.names
        self._bits = 2 ** torch.arange(len(self.names), device=env.device)
        self._success = [self.names.index(n) for n in success_terms] or None

    def fired(self, ids: torch.Tensor) -> torch.Tensor:
        """(len(ids), len(names)) booleans: which terms fired for each env."""
        if isinstance(self.env, DirectRLEnv):
            return torch.stack([self.env.reset_terminated[ids], self.env.reset_time_outs[ids]], 1)
        manager = self.env.termination_manager
        return torch.stack([manager.get_term(name)[ids] for name in self.names], dim=1)

    def end(self, ids: torch.Tensor, length: torch.Tensor) -> EpisodeEnd:
        fired = self.fired(ids)
        if self.joined:
            termination = (fired.long() * self._bits).sum(1) - 1
        else:
            termination = torch.where(fired.any(1), fired.int().argmax(1), -1)
        if isinstance(self.env, DirectRLEnv):
            terminated, truncated = fired[:, 0], fired[:, 1]
        else:
            manager = self.env.termination_manager
            terminated, truncated = manager.terminated[ids], manager.time_outs[ids]
        return EpisodeEnd(
            env_ids=ids,
            length=length,
            terminated=terminated,
            truncated=truncated,
            termination=termination,
            success=None if self._success is None else fired[:, self._success].any(1),
        )


# --- the hook --------------------------------------------------------------------------------


class EnvRecording:
    """Records the episodes of one Isaac Lab env into ``session`` by wrapping, on this env
    instance only, ``_reset_idx`` (close the episodes being reset, then reset) and ``close``
    (end the running episodes as aborted records, then close). With ``finish_session`` the
    session finishes when the env closes (Isaac Lab's compose-only entry points)."""

    def __init__(
        self,
        env: RLEnv,
        session: Session,
        *,
        success_terms: Sequence[str],
        finish_session: bool = False,
    ) -> None:
        self.env = env
        self.session = session
        self.finish_session = finish_session
        self.episodes = env_episodes(env)
        names = termination_names(env.cfg)
        self.outcome = _Outcome(env, names, resolve_success_terms(names, success_terms))
        self.recorder: EpisodeRecorder | None = session.bind(
            self.episodes.identity,
            seed=self.episodes.seed,
            env=env,
            termination_names=self.outcome.record_names,
            variations=self.episodes.variations,
        )
        self.episodes.recording = self  # variations built after the hook join at once
        self._reset_idx: Callable[..., Any] = env._reset_idx
        self._close: Callable[[], None] = env.close
        env._reset_idx = self.reset_idx
        env.close = self.close
        _live.add(self)

    def reset_idx(self, env_ids: EnvIds, *args: Any, **kwargs: Any) -> Any:
        """Close the episodes of ``env_ids`` into the session, then run the env's reset."""
        if self.recorder is not None:
            ids = self.episodes.ids(env_ids)
            self.recorder.close(self.outcome.end(ids, self.episodes.lengths(ids)))
            self.episodes.advance(ids)
        return self._reset_idx(env_ids, *args, **kwargs)

    def detach(self) -> None:
        """End the running episodes as aborted records and stop recording this env."""
        if self.recorder is None:
            return
        ids = torch.arange(self.env.num_envs, device=self.env.device)
        none = torch.zeros_like(ids, dtype=torch.bool)
        end = EpisodeEnd(ids, self.episodes.lengths(ids), none, none, torch.full_like(ids, -1))
        self.recorder.close(end)
        self.session.unbind(self.recorder)
        self.recorder = None
        self.episodes.recording = None
        _live.discard(self)
        if self.finish_session:
            self.session.finish("completed")

    def close(self) -> None:
        """The env is closing: detach, then close it."""
        self.detach()
        self._close()


def live_recordings(session: Session) -> list[EnvRecording]:
    """The envs recording into ``session`` now."""
    return [recording for recording in _live if recording.session is session]


class RecordingHook(ManagerTermBase):
    """The ``startup`` event term ``instrument`` adds: building it attaches ``EnvRecording``.

    Isaac Lab builds class event terms while the env is built, before the startup events run,
    so draws at build are recorded too. Calling it does nothing.
    """

    def __init__(self, cfg: EventTermCfg, env: RLEnv) -> None:
        super().__init__(cfg, env)
        session = active_session()
        if session is None:
            raise ArenaRecordingError(
                "this env cfg was instrumented for recording, but no recording session is "
                "active while the env is built; build the env inside the session"
            )
        self.recording = EnvRecording(env, session, **cfg.params)

    def __call__(
        self,
        env: RLEnv,
        env_ids: EnvIds,
        success_terms: Sequence[str] = (),
        finish_session: bool = False,
    ) -> None:
        return None


@configclass
class _RecordingEventsCfg:
    """``events`` of a ``DirectRLEnvCfg`` that has none: only the recording hook."""


def supports_recording(env_cfg: Any) -> bool:
    """Whether envs built from ``env_cfg`` can record (manager-based RL and direct RL envs)."""
    return isinstance(env_cfg, ManagerBasedRLEnvCfg | DirectRLEnvCfg)


def instrument(
    env_cfg: ManagerBasedRLEnvCfg | DirectRLEnvCfg,
    *,
    success_terms: Sequence[str] | None = None,
    finish_session: bool = False,
) -> ManagerBasedRLEnvCfg | DirectRLEnvCfg:
    """Add the recording hook to ``env_cfg`` if a session is active; else do nothing.

    ``success_terms`` are checked here against the task's termination terms (a ``ConfigError``
    naming them); ``finish_session`` finishes the session when the env closes. The task's own
    randomizing event terms are recorded too (``isaaclab_task_events.record_task_events``).
    """
    from arena_recording.integrations.isaaclab_task_events import record_task_events

    session = active_session()
    if session is None:
        return env_cfg
    if not supports_recording(env_cfg):
        raise ConfigError(
            "env_cfg",
            f"recording needs a ManagerBasedRLEnvCfg or DirectRLEnvCfg, got {type(env_cfg).__name__}",
        )
    success = resolve_success_terms(termination_names(env_cfg), success_terms)
    if env_cfg.events is None:
        env_cfg.events = _RecordingEventsCfg()
    hook = EventTermCfg(
        func=RecordingHook,
        mode="startup",
        params={"success_terms": success, "finish_session": finish_session},
    )
    setattr(env_cfg.events, HOOK_TERM, hook)
    record_task_events(env_cfg)
    log.info("arena-recording: the env built from this cfg records into %s", session.output_dir)
    return env_cfg
