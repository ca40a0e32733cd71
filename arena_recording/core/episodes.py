"""Episode identity: which episode each env is in, so draws and records are attributed right.

At every reset of envs ``E`` the adapter (1) closes the current episodes of ``E`` (records are
built from the still-intact state), (2) calls ``advance`` to open the next identities, (3) runs
the reset and its randomization, whose draws belong to the new episodes. An episode that never
took a step keeps its identity: the initial reset and a double reset produce no record.

Example::

    identity = EpisodeIdentity(num_envs=4)
    identity.advance(torch.tensor([1, 2]), started=torch.tensor([True, False]))
    identity.episode_in_env  # tensor([0, 1, 0, 0])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from arena_recording.core.launch import Launcher

try:
    import triton
    import triton.language as tl
except ImportError:  # CUDA advances then take the torch ops
    triton = None

log = logging.getLogger(__name__)


class EpisodeIdentity:
    """Per env, the open episode's index within the env and its run-wide ``episode_id``.

    Everything stays on ``device`` and never syncs: ids are assigned with a cumulative sum.
    ``columns`` holds both per env, ``(episode_in_env, episode_id)``, so that a reset batch's
    identities are gathered in one operation; the two attributes are views of it.
    With ``num_episodes``, each env gets a fixed quota (they differ by at most one), so an
    evaluation of exactly ``num_episodes`` does not over-weight short episodes: episodes past
    an env's quota still run but are outside the evaluation and get no record.
    """

    def __init__(
        self, num_envs: int, device: torch.device | str = "cpu", num_episodes: int | None = None
    ) -> None:
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.columns = torch.zeros(num_envs, 2, dtype=torch.int64, device=self.device)
        self.episode_in_env = self.columns[:, 0]
        self.episode_id = self.columns[:, 1]
        self.episode_id.copy_(torch.arange(num_envs, device=self.device))
        self._last_id = torch.tensor(num_envs - 1, dtype=torch.int64, device=self.device)
        if self.device.type == "cpu":  # numpy views of the same memory (``_advance_numpy``)
            self._host = (self.columns.numpy(), self._last_id.numpy())
        self.quota: torch.Tensor | None = None
        self.version = 0  # bumped whenever episodes are renumbered: host-side cache keys
        if num_episodes is not None:
            self.set_quota(num_episodes)

    def continue_after(self, next_episode_id: int, next_in_env: torch.Tensor | None = None) -> None:
        """Number the episodes after those a recording already holds: ``episode_id`` from
        ``next_episode_id``, each env's ``episode_in_env`` from ``next_in_env`` (a resume
        continues both; a second env bound in one session continues ``episode_id`` only)."""
        self.version += 1
        self.episode_id.add_(next_episode_id)
        self._last_id += next_episode_id
        if next_in_env is not None:
            self.episode_in_env.add_(next_in_env.to(self.device))

    def set_quota(self, num_episodes: int) -> None:
        """Split ``num_episodes`` over the envs: the first ``num_episodes % num_envs`` get one more."""
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        env = torch.arange(self.num_envs, device=self.device)
        self.quota = num_episodes // self.num_envs + (env < num_episodes % self.num_envs).long()

    def in_quota(self, env_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Whether the open episodes of ``env_ids`` (default: all) belong to the evaluation."""
        ids = slice(None) if env_ids is None else env_ids
        if self.quota is None:
            return torch.ones_like(self.episode_in_env[ids], dtype=torch.bool)
        return self.episode_in_env[ids] < self.quota[ids]

    def quota_met(self) -> bool:
        """True once every env has finished its quota (always False without one)."""
        return self.quota is not None and bool((self.episode_in_env >= self.quota).all())

    def advance(self, env_ids: torch.Tensor, started: torch.Tensor) -> None:
        """Open the next episode for the ``env_ids`` (each at most once) whose episode
        ``started``; keep the rest. On CUDA one kernel, on the CPU a few numpy calls."""
        self.version += 1
        if env_ids.shape[0] == 0:
            return
        if self.device.type == "cpu" and env_ids.device.type == "cpu":
            self._advance_numpy(env_ids.numpy(), started.numpy().astype(bool, copy=False))
            return
        if (
            self.device.type == "cuda"
            and env_ids.is_cuda
            and _kernel_advance(self, env_ids, started)
        ):
            return
        self._advance_torch(env_ids, started)

    def _advance_torch(self, env_ids: torch.Tensor, started: torch.Tensor) -> None:
        """``advance`` in torch ops: a device without the kernel."""
        flags, started = started.bool(), started.to(torch.int64)  # no copy where already so
        self.episode_in_env.index_add_(0, env_ids, started)
        new_ids = torch.add(started.cumsum(0), self._last_id)  # numbered after every id given
        old_ids = self.episode_id.index_select(0, env_ids)
        self.episode_id.index_copy_(0, env_ids, torch.where(flags, new_ids, old_ids))
        self._last_id.copy_(new_ids[-1])

    def _advance_numpy(self, env_ids: np.ndarray, started: np.ndarray) -> None:
        """``advance`` on the CPU, on numpy views of the same memory: a reset batch is a few
        values, and a numpy call costs a fraction of a torch call there."""
        columns, last = self._host
        columns[env_ids, 0] += started
        new_ids = np.cumsum(started) + last
        columns[env_ids[started], 1] = new_ids[started]
        last[...] = new_ids[-1]


_BLOCK = 1024
_failed: str | None = None  # why the kernel could not run here (then advances take torch ops)


def _kernel_advance(
    identity: EpisodeIdentity, env_ids: torch.Tensor, started: torch.Tensor
) -> bool:
    """``advance`` as one kernel launch; False where it cannot run (no Triton, or a kernel that
    does not build here: said once, and the torch ops number the same episodes)."""
    global _failed
    if triton is None or _failed is not None:
        return False
    started = started.bool()
    try:
        _launch_advance(
            1,
            identity.columns,
            identity._last_id,
            env_ids,
            started,
            env_ids.shape[0],
            env_ids.stride(0),
            started.stride(0),
            BLOCK=_BLOCK,
        )
    except Exception as error:  # noqa: BLE001 - a kernel that does not build or launch
        _failed = f"{type(error).__name__}: {error}"
        log.warning("arena-recording: episode numbering takes torch ops (%s)", _failed)
        return False
    return True


if triton is not None:

    @triton.jit(do_not_specialize=["n", "env_stride", "started_stride"])
    def _advance_kernel(
        columns_ptr,
        last_ptr,
        env_ptr,
        started_ptr,
        n,
        env_stride,
        started_stride,
        BLOCK: tl.constexpr,
    ):
        """``advance``'s torch ops in one program: new ids are numbered by a running sum of
        the started flags, block by block (a reset batch is a block or a few)."""
        last = tl.load(last_ptr)
        start = 0
        while start < n:  # (a ``for`` over a runtime bound fails in Triton's interpreter)
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            env = tl.load(env_ptr + offs * env_stride, mask=mask, other=0).to(tl.int64)
            started = tl.load(started_ptr + offs * started_stride, mask=mask, other=0)
            started = started.to(tl.int64)
            in_env = tl.load(columns_ptr + 2 * env, mask=mask, other=0)
            tl.store(columns_ptr + 2 * env, in_env + started, mask=mask)
            old_id = tl.load(columns_ptr + 2 * env + 1, mask=mask, other=0)
            new_id = last + tl.cumsum(started, 0)
            tl.store(columns_ptr + 2 * env + 1, tl.where(started != 0, new_id, old_id), mask=mask)
            last += tl.sum(started, 0)
            start += BLOCK
        tl.store(last_ptr, last)

    _launch_advance = Launcher(_advance_kernel)


@dataclass
class EpisodeEnd:
    """How the current episodes of ``env_ids`` end, as the adapter saw it before the reset.

    ``length`` counts steps taken in the episode (0: the episode never started and gets no
    record). ``termination`` indexes the adapter's termination names (-1: none fired).
    ``success`` may be ``None`` when the env has no notion of success.
    """

    env_ids: torch.Tensor
    length: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    termination: torch.Tensor
    success: torch.Tensor | None = None
