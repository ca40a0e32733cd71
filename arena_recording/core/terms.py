"""Recorder terms: functions that add columns to the records of a batch of finished episodes.

A term config (``TermCfg``) names a function by import path (``pkg.module:function`` or
``pkg.module.function``), holds a callable, or is a ``_target_`` node (hydra-zen ``builds``),
plus ``params``. Functions are resolved and their params checked once, when
the session starts; each is then called once per reset batch with an ``EpisodeBatch`` and
returns columns (a mapping of name to one value per episode), or one column named after the term.

Example (a term declared in config only)::

    # my_pkg/metrics.py
    def final_x(batch: EpisodeBatch, axis: int = 0) -> torch.Tensor:
        return batch.env.unwrapped.cube_pos[batch.env_ids, axis]

    TermCfg(func="my_pkg.metrics:final_x", params={"axis": 0})
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from arena_recording.core.config import TermCfg, from_mapping
from arena_recording.errors import ConfigError


@dataclass
class EpisodeBatch:
    """The episodes that finished in one reset batch, as term functions see them.

    Tensors are on the env's device and indexed like ``env_ids``; ``env`` is whatever the
    adapter recorded from (the gymnasium vector env, the Isaac Lab env), or ``None``.
    ``start_time`` and ``end_time`` are seconds since the epoch, one per episode.
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
    end_time: np.ndarray
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
    """``pkg.module:qualname`` of a function; a ``functools.partial`` shows what it binds, a
    callable object names its class."""
    if isinstance(func, functools.partial):
        bound = [repr(a) for a in func.args] + [f"{k}={v!r}" for k, v in func.keywords.items()]
        return f"functools.partial({', '.join([func_path(func.func), *bound])})"
    if not hasattr(func, "__qualname__"):
        func = type(func)
    return f"{getattr(func, '__module__', None) or '?'}:{func.__qualname__}"


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


def _target(node: Mapping[str, Any], where: str) -> tuple[Any, dict[str, Any]]:
    """A ``_target_`` node (hydra-zen ``builds(func, zen_partial=True)``): the function path
    and the params its other fields hold; Hydra's ``_partial_``, ``_convert_`` ... are dropped."""
    if "_target_" not in node:
        raise ConfigError(f"{where}.func", "a mapping needs _target_ (the function's path)")
    if node.get("_args_"):
        raise ConfigError(f"{where}.func._args_", "terms take params by name only")
    params = {k: v for k, v in node.items() if not (k.startswith("_") and k.endswith("_"))}
    return node["_target_"], params


def resolve_term(name: str, cfg: TermCfg | Mapping[str, Any], path: str = "recorder") -> Term:
    """Import the function and check ``params`` against its signature; errors name the config
    key ``{path}.terms.{name}``."""
    where = f"{path}.terms.{name}"
    cfg = from_mapping(TermCfg, cfg, where)
    func, params = cfg.func, dict(cfg.params or {})
    if isinstance(func, Mapping):
        func, node_params = _target(func, where)
        params = {**node_params, **params}
    if func is None:
        raise ConfigError(f"{where}.func", "'func' is required")
    try:
        func = import_func(func) if isinstance(func, str) else func
    except ValueError as err:
        raise ConfigError(f"{where}.func", str(err)) from None
    if not callable(func):
        raise ConfigError(f"{where}.func", f"{func!r} is not callable")
    try:
        inspect.signature(func).bind(None, **params)
    except TypeError as err:
        raise ConfigError(
            f"{where}.params",
            f"params {sorted(params)} do not fit {func_path(func)}{inspect.signature(func)}: {err}",
        ) from None
    return Term(name, func, params)


def _iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def _iso_column(seconds: np.ndarray) -> list[str]:
    """UTC times as ISO text, each distinct time formatted once (a reset batch shares one)."""
    times = seconds.tolist()
    texts = {t: _iso_utc(t) for t in set(times)}
    return [texts[t] for t in times]


def core(batch: EpisodeBatch) -> dict[str, Any]:
    """Outcome and timing: status, success, terminated, truncated, termination, length, times."""
    terminated, truncated = batch.terminated, batch.truncated
    status_index = torch.where(terminated, 0, torch.where(truncated, 1, 2)).cpu().numpy()
    status = np.array(["terminated", "truncated", "aborted"], dtype=object)[status_index]
    return {
        "status": status,
        "success": None if batch.success is None else batch.success,
        "terminated": terminated,
        "truncated": truncated,
        "termination": batch.termination,
        "length": batch.length,
        "start_time": _iso_column(batch.start_time),
        "end_time": _iso_column(batch.end_time),
        "seed": batch.seed,
    }


def variations(batch: EpisodeBatch) -> dict[str, Any]:
    """Every enabled factor, in every row; build-scope factors repeat, undrawn ones are null."""
    return {"variations": batch.variations}
