"""The task's own randomization, recorded: Isaac Lab's event terms reported as task factors.

Isaac Lab's standard randomizing event terms (``randomize_rigid_body_mass``,
``reset_joints_by_offset``, ...) draw from torch's global random stream and write into the
simulation without telling anyone what they drew. ``record_task_events`` wraps each such term
of ``env_cfg.events``: the term runs exactly as before (same parameters, same random numbers),
then the quantity it wrote is read back from the simulation for the envs it ran on and reported
as a draw of a task factor keyed ``events.<term>.<quantity>``. Recorded values are the values
the simulation holds (absolute masses, joint positions, ...); pushes and external wrenches are
recorded as the velocity change or wrench they applied. The factor schema comes from the term's
params: distribution, per-component bounds (a scale or offset applied to the asset's default),
operation and the range as given.

Opt-in alternative, ``record_task_events(env_cfg, replace=True)`` (or a list of term names):
the term's draws come from our deterministic samplers of the same distribution instead of
torch's stream, written by our appliers; reproducible per (seed, env, episode) and replayable.

Two writers of one quantity at reset (two event terms, or an event term and a variation) are
reported with a warning naming both when the env is built (``isaaclab_appliers.claim``).

Example::

    env_cfg = record_task_events(task_env_cfg)   # instrument() does this while recording
    env = ManagerBasedRLEnv(env_cfg)              # records now hold events.reset_cart_position.*
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import warp as wp
from isaaclab.envs import ManagerBasedEnv
from isaaclab.envs.mdp import events as mdp_events
from isaaclab.managers import EventTermCfg, ManagerTermBase, SceneEntityCfg
from isaaclab.utils import math as math_utils
from isaaclab.utils.string import string_to_callable

from arena_recording.core.sampling import Draw, SamplerBase, Scope
from arena_recording.core.variations import VariationBase, build_variations
from arena_recording.errors import ConfigError
from arena_recording.integrations import isaaclab_appliers as il
from arena_recording.integrations.isaaclab_recording import EnvIds, env_episodes
from arena_recording.integrations.isaaclab_variations import draw

_SCOPES = {"startup": Scope("build"), "reset": Scope("episode"), "interval": Scope("interval")}
_AXES = ("x", "y", "z", "roll", "pitch", "yaw")
_DISTRIBUTIONS = {"uniform": "uniform", "log_uniform": "log_uniform", "gaussian": "normal"}


# --- task factors: variations whose values are observed, not drawn ---------------------------


class _Observed(SamplerBase):
    """A sampler that never samples: it passes observed values on to its listeners."""

    def _sample(self, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        raise TypeError(f"task factor {self.key!r} is read from the simulation, not drawn")

    def report(self, draw: Draw) -> None:
        for listener in self._listeners:
            listener(draw)


@dataclass(frozen=True)
class _FactorCfg:
    key: str
    scope: Scope
    enabled: bool = True


class TaskFactor(VariationBase):
    """A factor whose values a task's own event term chose; recorded like any variation."""

    def __init__(
        self, key: str, scope: Scope, shape: tuple[int, ...], description: dict[str, Any]
    ) -> None:
        self._shape = shape
        self._description = description
        super().__init__(_FactorCfg(key, scope))  # type: ignore[arg-type]

    def _apply(self, cfg: _FactorCfg) -> None:  # type: ignore[override]
        self.cfg = cfg
        self._sampler = _Observed(cfg.key, self._shape)
        for listener in self._listeners:
            self._sampler.add_listener(listener)

    @property
    def labels(self) -> None:
        return None

    def apply_cfg(self, cfg: Any) -> None:
        raise TypeError(f"task factor {self.key!r} follows its event term's params")

    def sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise TypeError(f"task factor {self.key!r} is read from the simulation, not drawn")

    def report(
        self,
        env_ids: torch.Tensor,
        values: torch.Tensor,
        *,
        episode_in_env: torch.Tensor | None,
        step: torch.Tensor | None = None,
    ) -> None:
        """Tell the listeners (the recorder) the values the simulation holds for ``env_ids``."""
        index = 0 if step is None else step
        self._sampler.report(Draw(self.key, values, env_ids, self.scope, episode_in_env, index))

    def schema(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": "continuous",
            "shape": list(self._shape),
            "scope": self.scope.value,
            "enabled": True,
            **self._description,
        }


# --- probes: what each of Isaac Lab's event terms writes, and how to read it back ------------


@dataclass
class _Probe:
    """One quantity an event term writes: read back ``(n, *shape)`` values for env ids."""

    name: str
    shape: tuple[int, ...]
    read: Callable[[torch.Tensor], torch.Tensor]
    description: dict[str, Any]
    delta: bool = False
    """Record the change the term made (pushes) instead of the value after it."""


@dataclass
class _Writes:
    quantity: str
    asset: str | None
    items: frozenset[int] | None = None


def _describe(
    distribution: str,
    pair: Any,
    operation: str,
    default: torch.Tensor,
    **params: Any,
) -> dict[str, Any]:
    """Schema of absolute values drawn by ``operation`` of ``distribution(pair)`` on ``default``."""
    a, b = (torch.as_tensor(v, dtype=torch.float64) for v in pair)
    if distribution == "gaussian":
        lo, hi, bounds = a - 3 * b, a + 3 * b, "soft"
    else:
        lo, hi, bounds = a, b, "hard"
    d = default.double().cpu().reshape(-1)
    if operation == "abs":
        low, high = lo.expand_as(d), hi.expand_as(d)
    elif operation == "add":
        low, high = d + lo, d + hi
    else:
        low, high = torch.minimum(d * lo, d * hi), torch.maximum(d * lo, d * hi)
    return {
        "distribution": _DISTRIBUTIONS[distribution],
        "low": low.tolist(),
        "high": high.tolist(),
        "bounds": bounds,
        "choices": None,
        "weights": None,
        "params": {
            "distribution": distribution,
            "operation": operation,
            "range": [pair[0], pair[1]],
            **params,
        },
    }


def _describe_axes(ranges: dict[str, Any], axes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "distribution": "uniform",
        "low": [float(ranges[a][0]) for a in axes],
        "high": [float(ranges[a][1]) for a in axes],
        "bounds": "hard",
        "choices": None,
        "weights": None,
        "params": {"components": list(axes), "range": {a: list(ranges[a]) for a in axes}},
    }


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One selected item with one component is a scalar factor."""
    return () if shape in ((1,), (1, 1)) else shape


def _quantity_probe(
    env: ManagerBasedEnv,
    name: str,
    quantity: str,
    cfg: SceneEntityCfg,
    pair: Any,
    params: dict[str, Any],
    **extra: Any,
) -> _Probe:
    q = il.QUANTITIES[quantity]
    default = q.read(env, cfg)[0]
    shape = _squeeze(tuple(default.shape))
    names = q.item_names(env, cfg)
    description = _describe(
        params["distribution"], pair, params["operation"], default, items=names, **extra
    )
    return _Probe(name, shape, lambda ids: q.read(env, cfg)[ids], description)


def _items(env: ManagerBasedEnv, cfg: SceneEntityCfg, quantity: str) -> frozenset[int]:
    return frozenset(il.QUANTITIES[quantity].items(env, cfg).tolist())


def _mass(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    cfg = p["asset_cfg"]
    probe = _quantity_probe(env, "mass", "body_mass", cfg, p["mass_distribution_params"], p)
    written = [_Writes("body_mass", cfg.name, _items(env, cfg, "body_mass"))]
    if p.get("recompute_inertia", True):
        written.append(_Writes("body_inertia", cfg.name, _items(env, cfg, "body_mass")))
    return [probe], written


def _material(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    """Newton samples friction and restitution per shape of the selected bodies."""
    cfg = p["asset_cfg"]
    shapes = torch.tensor([s for g in il.shape_groups(env, cfg) for s in g], device=env.device)
    probes = []
    for name, attribute, key in (
        ("friction", "shape_material_mu", "static_friction_range"),
        ("restitution", "shape_material_restitution", "restitution_range"),
    ):
        view = il.shape_view(attribute)
        default = view(env, cfg)[0, shapes]
        description = _describe("uniform", p[key], "abs", default, shapes=len(shapes))

        def read(ids: torch.Tensor, view: Callable = view) -> torch.Tensor:
            return view(env, cfg)[ids][:, shapes].clone()

        probes.append(_Probe(name, _squeeze((len(shapes),)), read, description))
    bodies = _items(env, cfg, "body_mass")
    return probes, [_Writes(q, cfg.name, bodies) for q in ("friction", "restitution")]


def _com(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    """The centre-of-mass offset from the default, one per env for every selected body."""
    cfg = p["asset_cfg"]
    com = il.QUANTITIES["body_com"]
    default = com.read(env, cfg)
    axes = tuple(a for a in _AXES[:3] if a in p["com_range"])
    columns = [_AXES.index(a) for a in axes]

    def read(ids: torch.Tensor) -> torch.Tensor:
        return (com.read(env, cfg)[ids] - default[ids])[:, 0, columns]

    description = _describe_axes(p["com_range"], axes)
    description["params"]["items"] = com.item_names(env, cfg)
    probe = _Probe("com_offset", _squeeze((len(axes),)), read, description)
    return [probe], [_Writes("body_com", cfg.name, _items(env, cfg, "body_com"))]


def _root_state(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    """Pose offsets from the default (x, y, z, roll, pitch, yaw) and velocity offsets."""
    cfg = p["asset_cfg"]
    data = env.scene[cfg.name].data

    def pose(ids: torch.Tensor) -> torch.Tensor:
        default = data.default_root_pose.torch[ids]
        position = data.root_link_pos_w.torch[ids] - env.scene.env_origins[ids] - default[:, :3]
        turn = math_utils.quat_mul(
            math_utils.quat_conjugate(default[:, 3:7]), data.root_link_quat_w.torch[ids]
        )
        angles = torch.stack(math_utils.euler_xyz_from_quat(turn), dim=1)
        return torch.cat([position, math_utils.wrap_to_pi(angles)], dim=1)

    def velocity(ids: torch.Tensor) -> torch.Tensor:
        return data.root_com_vel_w.torch[ids] - data.default_root_vel.torch[ids]

    probes = []
    for name, ranges, read in (
        ("pose", p["pose_range"], pose),
        ("velocity", p["velocity_range"], velocity),
    ):
        axes = tuple(a for a in _AXES if a in ranges)
        if axes:
            columns = [_AXES.index(a) for a in axes]

            def picked(ids: torch.Tensor, read: Callable = read, columns=columns) -> torch.Tensor:
                return read(ids)[:, columns]

            probes.append(
                _Probe(name, _squeeze((len(axes),)), picked, _describe_axes(ranges, axes))
            )
    return probes, [_Writes(q, cfg.name) for q in ("root_pose", "root_velocity")]


def _joints_by(operation: str) -> Callable[..., tuple[list[_Probe], list[_Writes]]]:
    def build(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
        cfg = p["asset_cfg"]
        data = env.scene[cfg.name].data
        joints = il.QUANTITIES["joint_position"].items(env, cfg)
        probes = []
        for name, key, default in (
            ("joint_position", "position_range", data.default_joint_pos.torch),
            ("joint_velocity", "velocity_range", data.default_joint_vel.torch),
        ):
            quantity = il.QUANTITIES[name]
            names = quantity.item_names(env, cfg)
            description = _describe("uniform", p[key], operation, default[0, joints], items=names)

            def read(ids: torch.Tensor, quantity: il.Quantity = quantity) -> torch.Tensor:
                return quantity.read(env, cfg)[ids]

            probes.append(_Probe(name, _squeeze((len(joints),)), read, description))
        items = frozenset(joints.tolist())
        return probes, [_Writes(q, cfg.name, items) for q in ("joint_position", "joint_velocity")]

    return build


def _joint_quantities(
    names: dict[str, tuple[str, str]],
) -> Callable[..., tuple[list[_Probe], list[_Writes]]]:
    """Terms that draw some joint quantities (params key -> (factor name, quantity))."""

    def build(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
        cfg = p["asset_cfg"]
        probes, written = [], []
        for key, (name, quantity) in names.items():
            if p.get(key) is not None:
                probes.append(_quantity_probe(env, name, quantity, cfg, p[key], p))
                written.append(_Writes(quantity, cfg.name, _items(env, cfg, quantity)))
        return probes, written

    return build


def _gravity(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    def read(ids: torch.Tensor) -> torch.Tensor:
        return il.read_gravity(env)[ids]

    default = read(torch.zeros(1, dtype=torch.long, device=env.device))[0]
    description = _describe(
        p["distribution"], p["gravity_distribution_params"], p["operation"], default
    )
    return [_Probe("gravity", (3,), read, description)], [_Writes("gravity", None)]


def _push(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    """The velocity change of the push, per axis given in ``velocity_range``."""
    cfg = p["asset_cfg"]
    ranges = p["velocity_range"]
    axes = tuple(a for a in _AXES if a in ranges)
    columns = [_AXES.index(a) for a in axes]

    def read(ids: torch.Tensor) -> torch.Tensor:
        return env.scene[cfg.name].data.root_com_vel_w.torch[ids][:, columns].clone()

    probe = _Probe("velocity_change", _squeeze((len(axes),)), read, _describe_axes(ranges, axes))
    probe.delta = True
    return [probe], [_Writes("root_velocity", cfg.name)]


def _external_wrench(env: ManagerBasedEnv, p: dict[str, Any]) -> tuple[list[_Probe], list[_Writes]]:
    """Force and torque per selected body, in the body frame."""
    cfg = p["asset_cfg"]
    composer = env.scene[cfg.name].permanent_wrench_composer
    bodies = il.QUANTITIES["body_mass"].items(env, cfg)
    probes = []
    for name, attribute, key in (
        ("force", "local_force_b", "force_range"),
        ("torque", "local_torque_b", "torque_range"),
    ):

        def read(ids: torch.Tensor, attribute: str = attribute) -> torch.Tensor:
            return wp.to_torch(getattr(composer, attribute))[ids][:, bodies].clone()

        default = torch.zeros(len(bodies) * 3)
        probes.append(
            _Probe(name, (len(bodies), 3), read, _describe("uniform", p[key], "abs", default))
        )
    return probes, [_Writes("external_wrench", cfg.name, frozenset(bodies.tolist()))]


_PROBES: dict[Any, Callable[[ManagerBasedEnv, dict[str, Any]], tuple[list[_Probe], list[_Writes]]]]
_PROBES = {
    mdp_events.randomize_rigid_body_mass: _mass,
    mdp_events.randomize_rigid_body_material: _material,
    mdp_events.randomize_rigid_body_com: _com,
    mdp_events.reset_root_state_uniform: _root_state,
    mdp_events.reset_joints_by_offset: _joints_by("add"),
    mdp_events.reset_joints_by_scale: _joints_by("scale"),
    mdp_events.randomize_actuator_gains: _joint_quantities(
        {
            "stiffness_distribution_params": ("stiffness", "actuator_stiffness"),
            "damping_distribution_params": ("damping", "actuator_damping"),
        }
    ),
    mdp_events.randomize_joint_parameters: _joint_quantities(
        {
            "friction_distribution_params": ("friction", "joint_friction"),
            "armature_distribution_params": ("armature", "joint_armature"),
        }
    ),
    mdp_events.randomize_physics_scene_gravity: _gravity,
    mdp_events.push_by_setting_velocity: _push,
    mdp_events.apply_external_force_torque: _external_wrench,
}
"""Isaac Lab's randomizing event terms whose draws are recorded."""

_REPLACEMENTS: dict[Any, tuple[str | None, tuple[tuple[str, str, str], ...]]] = {
    mdp_events.reset_joints_by_offset: (
        "add",
        (
            ("joint_position", "position_range", "joint_position"),
            ("joint_velocity", "velocity_range", "joint_velocity"),
        ),
    ),
    mdp_events.reset_joints_by_scale: (
        "scale",
        (
            ("joint_position", "position_range", "joint_position"),
            ("joint_velocity", "velocity_range", "joint_velocity"),
        ),
    ),
    mdp_events.randomize_rigid_body_mass: (
        None,
        (("mass", "mass_distribution_params", "body_mass"),),
    ),
    mdp_events.randomize_actuator_gains: (
        None,
        (
            ("stiffness", "stiffness_distribution_params", "actuator_stiffness"),
            ("damping", "damping_distribution_params", "actuator_damping"),
        ),
    ),
    mdp_events.randomize_joint_parameters: (
        None,
        (
            ("friction", "friction_distribution_params", "joint_friction"),
            ("armature", "armature_distribution_params", "joint_armature"),
        ),
    ),
}
"""Terms ``record_task_events(replace=...)`` can replace: (operation, (factor, param, quantity)).
The operation is the term's own ``operation`` param where it has one."""


def _sampler(distribution: str, pair: Any, count: int) -> dict[str, Any]:
    """Our sampler for Isaac Lab's ``distribution(pair)``, one independent draw per item."""
    a, b = (float(v) if count == 1 else [float(v)] * count for v in pair)
    if distribution == "gaussian":
        return {"type": "normal", "mean": a, "std": b}
    return {"type": distribution, "low": a, "high": b}


def _replacement(
    term: str, inner: Any, env: ManagerBasedEnv, cfg: EventTermCfg
) -> list[tuple[VariationBase, il.Applier, SceneEntityCfg]]:
    """Variations drawing what ``inner`` would draw, with the appliers that write the same."""
    operation, factors = _REPLACEMENTS[inner]
    p = cfg.params
    asset_cfg = p["asset_cfg"]
    draws = []
    for name, key, quantity in factors:
        if p.get(key) is None:
            continue
        q = il.QUANTITIES[quantity]
        count = len(q.items(env, asset_cfg))
        sampler = _sampler(p.get("distribution", "uniform"), p[key], count)
        spec = {"sampler": sampler, "scope": _SCOPES[cfg.mode].value}
        (variation,) = build_variations({f"events.{term}.{name}": spec})
        draws.append((variation, q.applier(operation or p["operation"]), asset_cfg))
    return draws


# --- the wrapper term ------------------------------------------------------------------------


class TaskEventTerm(ManagerTermBase):
    """Runs one of the task's event terms unchanged, then reports what it wrote.

    Built per term by ``record_task_events`` (a subclass carries the wrapped term and the
    wrapped term's signature, so Isaac Lab checks and fills the params exactly as before).
    """

    wrapped: ClassVar[Any]
    term: ClassVar[str]
    replaced: ClassVar[bool] = False
    """Draw through our samplers and write with our appliers instead of running the term."""

    def __init__(self, cfg: EventTermCfg, env: ManagerBasedEnv) -> None:
        super().__init__(cfg, env)
        inner = self.wrapped
        self._mode = cfg.mode
        self._probes, written = _PROBES[inner](env, cfg.params)
        self._draws = _replacement(self.term, inner, env, cfg) if self.replaced else []
        self._inner = None
        self._factors = []
        if not self.replaced:
            self._inner = inner(cfg=cfg, env=env) if inspect.isclass(inner) else inner
            self._factors = [
                TaskFactor(
                    f"events.{self.term}.{p.name}", _SCOPES[self._mode], p.shape, p.description
                )
                for p in self._probes
            ]
        for w in written:
            writer = f"event term {self.term!r}"
            il.claim(env, il.Write(writer, cfg.mode, w.asset, w.quantity, w.items))
        self._episodes = env_episodes(env)
        for variation in (*self._factors, *(v for v, _, _ in self._draws)):
            self._episodes.add_variation(variation)  # recorded with this env's episodes

    def run(self, env: ManagerBasedEnv, env_ids: EnvIds, params: dict[str, Any]) -> None:
        ids = self._episodes.ids(env_ids)
        if self.replaced:
            for variation, apply, asset_cfg in self._draws:
                apply(env, ids, draw(env, variation, ids), asset_cfg)
            return
        before = [p.read(ids) if p.delta else None for p in self._probes]
        self._inner(env, env_ids, **params)
        if self._mode == "reset":
            self._episodes.advance(ids)
        episode = None if self._mode == "startup" else self._episodes.open_episodes(ids)
        step = env.episode_length_buf[ids] if self._mode == "interval" else None
        for probe, factor, old in zip(self._probes, self._factors, before, strict=True):
            values = probe.read(ids) if old is None else probe.read(ids) - old
            values = values.reshape(ids.shape[0], *probe.shape)
            factor.report(ids, values, episode_in_env=episode, step=step)

    def reset(self, env_ids: EnvIds = None) -> None:
        if isinstance(self._inner, ManagerTermBase):
            self._inner.reset(env_ids)


def _term_class(term: str, inner: Any, replaced: bool) -> type[TaskEventTerm]:
    """A ``TaskEventTerm`` for ``inner`` whose ``__call__`` has ``inner``'s signature."""
    signature = inspect.signature(inner.__call__ if inspect.isclass(inner) else inner)
    if not inspect.isclass(inner):
        this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        signature = signature.replace(parameters=[this, *signature.parameters.values()])

    def __call__(self: TaskEventTerm, env: ManagerBasedEnv, env_ids: EnvIds, **params: Any) -> None:
        self.run(env, env_ids, params)

    __call__.__signature__ = signature  # type: ignore[attr-defined]
    name = f"recorded_{getattr(inner, '__name__', term)}"
    namespace = {
        "wrapped": staticmethod(inner),
        "term": term,
        "replaced": replaced,
        "__call__": __call__,
        "__module__": __name__,
        "__qualname__": name,
    }
    return type(name, (TaskEventTerm,), namespace)


def recordable(func: Any) -> bool:
    """Whether ``func`` (an event term's function or class, or its import path) is recorded."""
    if isinstance(func, str):
        func = string_to_callable(func)
    return func in _PROBES


def record_task_events(env_cfg: Any, *, replace: bool | Collection[str] = False) -> Any:
    """Wrap each of ``env_cfg.events``' recordable terms (startup, reset or interval mode).

    The terms keep their params, modes and random draws; only ``func`` changes, and what they
    wrote is recorded as ``events.<term>.<quantity>``. Terms already wrapped are left alone,
    so calling this twice is harmless. Returns ``env_cfg``.

    ``replace`` (``True`` for every term that can be, or term names) swaps a term's draws for
    our deterministic samplers of the same distribution, written by our appliers on the same
    bodies or joints: reproducible per (seed, env, episode) and replayable. Records then hold
    the drawn offset, scale or value under the same key. Unlike Isaac Lab's terms, the values
    are not clamped to joint limits or a minimum mass.
    """
    events = getattr(env_cfg, "events", None)
    if events is None:
        return env_cfg
    items = events.items() if isinstance(events, dict) else vars(events).items()
    names = {term for term, _ in items}
    if not isinstance(replace, bool) and set(replace) - names:
        unknown = sorted(set(replace) - names)
        raise ConfigError("replace", f"{unknown} are not event terms of this task: {sorted(names)}")
    for term, cfg in items:
        if not isinstance(cfg, EventTermCfg) or cfg.mode not in _SCOPES:
            continue
        func = string_to_callable(cfg.func) if isinstance(cfg.func, str) else cfg.func
        if func not in _PROBES:
            continue
        swap = replace if isinstance(replace, bool) else term in replace
        if swap and func not in _REPLACEMENTS:
            if replace is True:
                swap = False
            else:
                raise ConfigError(
                    f"replace.{term}",
                    f"{func.__name__} cannot be replaced; these can: "
                    f"{sorted(f.__name__ for f in _REPLACEMENTS)}",
                )
        cfg.func = _term_class(term, func, swap)
    return env_cfg
