"""Isaac Lab adapter, variations: event terms that draw through our samplers and apply values.

Each variation is an event term: it draws for the episode open in each env and applies the
values with an applier (``arena_recording.integrations.isaaclab_appliers``). A variation is
the spec every adapter takes (``VariationCfg``: sampler, scope, enabled, and the adapter's
``apply`` block); the scope gives the event mode: build draws once per env at startup, episode
once per reset, interval at the episode step of each draw. Configs hold plain data only
(managers deep-copy them).

Example::

    env_cfg.events.cube_mass = variation_event(
        "cube.mass",
        {"type": "uniform", "low": 0.5, "high": 5.0},
        scope="build",
        apply={"func": mass, "asset": "cube"},
    )
    # from config: variation_event(key, **spec) with spec as YAML gives it
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from isaaclab.envs import ManagerBasedEnv
from isaaclab.managers import EventTermCfg, ManagerTermBase, SceneEntityCfg

from arena_recording.core.config import SamplerCfg, unknown_keys, variation_cfg
from arena_recording.core.sampling import Scope
from arena_recording.core.terms import import_func
from arena_recording.core.variations import VariationBase, VariationCfg
from arena_recording.errors import ConfigError
from arena_recording.integrations.isaaclab_appliers import (
    Applier,
    Write,
    claim,
    needs_asset,
    selection,
    writes,
)
from arena_recording.integrations.isaaclab_recording import EnvIds, env_episodes

_SCOPES = {"startup": Scope("build"), "reset": Scope("episode"), "interval": Scope("interval")}
_MODES = {scope: mode for mode, scope in _SCOPES.items()}
APPLY_KEYS = ("func", "asset", "bodies", "joints", "interval_range_s")


class VariationEvent(ManagerTermBase):
    """An event term that draws one variation for the open episodes and applies it.

    The scope follows the event mode: ``startup`` draws once per env at build, ``reset`` once
    per episode, ``interval`` at the episode step of each draw. With ``apply=None`` the value
    is drawn and recorded but applied to nothing (a control factor for analysis).
    """

    def __init__(self, cfg: EventTermCfg, env: ManagerBasedEnv) -> None:
        super().__init__(cfg, env)
        params = cfg.params
        if cfg.mode not in _SCOPES:
            raise ValueError(
                f"variation {params['key']!r}: event mode {cfg.mode!r} is not one of {list(_SCOPES)}"
            )
        self.variation = VariationBase(
            VariationCfg(
                key=params["key"],
                sampler=params["sampler"],
                scope=_SCOPES[cfg.mode],
                enabled=params.get("enabled", True),
            )
        )
        # recorded with this env's episodes; its reset draws share the reset's uniforms launch
        env_episodes(env).add_variation(self.variation, batched=True)
        apply = params.get("apply")
        try:
            self._apply = import_func(apply) if isinstance(apply, str) else apply
        except ValueError as err:
            raise ValueError(f"variation {params['key']!r}: apply: {err}") from None
        self._asset_cfg = self._selection(env, params)
        if self._apply is not None and self.variation.enabled:
            written = writes(self._apply, env, self._asset_cfg)
            if written is not None:
                quantity, items = written
                writer = f"variation {params['key']!r}"
                claim(env, Write(writer, cfg.mode, self._asset_cfg.name or None, quantity, items))

    def _selection(self, env: ManagerBasedEnv, params: dict[str, Any]) -> SceneEntityCfg:
        """The asset and its bodies or joints; an applier that writes an asset needs one."""
        key, asset = params["key"], params.get("asset")
        if not asset:
            if self._apply is not None and needs_asset(self._apply):
                name = getattr(self._apply, "__name__", repr(self._apply))
                raise ConfigError(key, f"applier {name!r} writes into a scene asset: give asset")
            return SceneEntityCfg("")
        names = list(env.scene.keys())
        if asset not in names:
            raise ConfigError(key, f"asset {asset!r} is not in the scene: {names}")
        try:
            return selection(env, asset, bodies=params.get("bodies"), joints=params.get("joints"))
        except ValueError as err:
            raise ConfigError(key, f"asset {asset!r}: {err}") from None

    def __call__(
        self,
        env: ManagerBasedEnv,
        env_ids: EnvIds,
        key: str,
        sampler: Any,
        apply: str | Applier | None = None,
        asset: str | None = None,
        bodies: str | list[str] | None = None,
        joints: str | list[str] | None = None,
        enabled: bool = True,
    ) -> None:
        if not self.variation.enabled:
            return
        ids = env_episodes(env).ids(env_ids)
        values = draw(env, self.variation, ids, batch=env_ids)
        if self._apply is not None:
            self._apply(env, ids, values, self._asset_cfg)


def draw(
    env: ManagerBasedEnv, variation: VariationBase, ids: torch.Tensor, batch: object = None
) -> torch.Tensor:
    """Draw ``variation`` for the episodes open in envs ``ids`` (opening them at a reset).

    ``batch``: the env ids the event term got from Isaac Lab; at a reset, a term given the
    same object as the first term of the step takes its values from those that term computed
    for all of the env's variation events (``EnvEpisodes.batch_draws``: on CUDA one launch per
    reset instead of several per variation). The term still draws and notifies its
    listeners itself, so a term not called for these envs records nothing.
    """
    episodes = env_episodes(env)
    values = None
    if variation.scope is _SCOPES["reset"]:
        episodes.advance(ids)
        if batch is not None:
            values = episodes.batch_draws(variation, ids, batch)
    interval = variation.scope is _SCOPES["interval"]
    drawn = variation.sample(
        ids,
        seed=episodes.seed,
        episode_in_env=episodes.open_episodes(ids),
        step=env.episode_length_buf[ids] if interval else None,
        device=env.device,
        drawn=values,
    )
    return variation.values(drawn)


def variation_event(
    key: str,
    sampler: SamplerCfg | Mapping[str, Any],
    *,
    scope: str = "episode",
    enabled: bool = True,
    apply: Mapping[str, Any] | None = None,
) -> EventTermCfg:
    """An ``EventTermCfg`` for the variation ``key`` (a ``VariationCfg``'s fields).

    ``apply`` is Isaac Lab's block: ``func`` the applier (an import path or a callable; none
    records the value and applies it to nothing), ``asset`` the scene entity it writes,
    ``bodies`` / ``joints`` (names or regexes, as Isaac Lab's ``SceneEntityCfg``) what of it,
    by default all, and ``interval_range_s`` the time between draws of an interval variation.
    Unknown keys are errors naming ``key.apply``.
    """
    spec = {"sampler": sampler, "scope": scope, "enabled": enabled, "apply": apply}
    cfg = variation_cfg(spec, key=key)
    block = dict(cfg.apply or {})
    unknown_keys(block, APPLY_KEYS, f"{key}.apply")
    interval = block.get("interval_range_s")
    return EventTermCfg(
        func=VariationEvent,
        mode=_MODES[cfg.scope],
        interval_range_s=None if interval is None else tuple(interval),
        params={
            "key": key,
            "sampler": cfg.sampler.to_dict(),
            "apply": block.get("func"),
            "asset": block.get("asset"),
            "bodies": block.get("bodies"),
            "joints": block.get("joints"),
            "enabled": cfg.enabled,
        },
    )
