"""Recorder terms: functions that add columns to the records of a batch of finished episodes.

A term config names a function by import path (``pkg.module:function`` or ``pkg.module.function``)
or holds a callable, plus ``params``. Functions are resolved and their params checked once, when
the session starts; each is then called once per reset batch with an ``EpisodeBatch`` and
returns columns (a mapping of name to one value per episode), or one column named after the term.

Example (a term declared in config only)::

    # my_pkg/metrics.py
    def final_x(batch: EpisodeBatch, axis: int = 0) -> torch.Tensor:
        return batch.env.unwrapped.cube_pos[batch.env_ids, axis]

    TermCfg(func="my_pkg.metrics:final_x", params={"axis": 0})
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch


@dataclass
class TermCfg:
    """A recorder term: the function to call, its extra keyword ``params``, and a switch."""

    func: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class EpisodeBatch:
    """The episodes that finished in one reset batch, as term functions see them.

    Tensors are on the env's device and indexed like ``env_ids``; ``env`` is whatever the
    adapter recorded from (the gymnasium vector env, the Isaac Lab env), or ``None``.
    """

    env_ids: torch.Tensor
    episode_id: torch.Tensor
    episode_in_env: torch.Tensor
    length: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    termination: list[str | None]
    success: torch.Tensor | None
    start_time: np.ndarray
    end_time: float
    seed: int
    variations: dict[str, Any]
    env: Any = None

    def __len__(self) -> int:
        return int(self.env_ids.shape[0])


TermFunc = Callable[..., Any]


@dataclass(frozen=True)
class Term:
    """A resolved term: ``func(batch, **params)``."""

    name: str
    func: TermFunc
    params: dict[str, Any]

    def __call__(self, batch: EpisodeBatch) -> Mapping[str, Any]:
        out = self.func(batch, **self.params)
        return out if isinstance(out, Mapping) else {self.name: out}

    def describe(self) -> dict[str, Any]:
        return {"func": func_path(self.func), "params": self.params}


def func_path(func: TermFunc) -> str:
    return f"{func.__module__}:{func.__qualname__}"


def import_func(path: str) -> TermFunc:
    """``pkg.module:function`` or ``pkg.module.function`` -> the function."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path (pkg.module:function)")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} for {path!r}: {err}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r} ({path!r})") from None
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target


def resolve_term(name: str, cfg: TermCfg | Mapping[str, Any]) -> Term:
    """Import the function and check ``params`` against its signature; errors name the term."""
    if isinstance(cfg, Mapping):
        unknown = set(cfg) - {"func", "params", "enabled"}
        if unknown:
            raise ValueError(f"recorder term {name!r}: unknown keys {sorted(unknown)}")
        cfg = TermCfg(**cfg)
    where = f"recorder term {name!r}"
    if cfg.func is None:
        raise ValueError(f"{where}: 'func' is required")
    try:
        func = import_func(cfg.func) if isinstance(cfg.func, str) else cfg.func
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if not callable(func):
        raise ValueError(f"{where}: func {cfg.func!r} is not callable")
    params = dict(cfg.params or {})
    try:
        inspect.signature(func).bind(None, **params)
    except TypeError as err:
        raise ValueError(
            f"{where}: params {sorted(params)} do not fit {func_path(func)}"
            f"{inspect.signature(func)}: {err}"
        ) from None
    return Term(name, func, params)


def _iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def core(batch: EpisodeBatch) -> dict[str, Any]:
    """Outcome and timing: status, success, terminated, truncated, termination, length, times."""
    terminated, truncated = batch.terminated, batch.truncated
    status_index = torch.where(terminated, 0, torch.where(truncated, 1, 2)).cpu().numpy()
    status = np.array(["terminated", "truncated", "aborted"], dtype=object)[status_index]
    starts = batch.start_time.tolist()
    texts = {start: _iso_utc(start) for start in set(starts)}  # few distinct start times
    start_text = [texts[start] for start in starts]
    return {
        "status": status,
        "success": None if batch.success is None else batch.success,
        "terminated": terminated,
        "truncated": truncated,
        "termination": batch.termination,
        "length": batch.length,
        "start_time": start_text,
        "end_time": _iso_utc(batch.end_time),
        "seed": batch.seed,
    }


def variations(batch: EpisodeBatch) -> dict[str, Any]:
    """Every enabled factor, in every row; build-scope factors repeat, undrawn ones are null."""
    return {"variations": batch.variations}
