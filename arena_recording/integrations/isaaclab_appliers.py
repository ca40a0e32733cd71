"""Isaac Lab appliers: write a variation's values into the simulation, and read them back.

An applier is ``(env, env_ids, values, asset_cfg) -> None``. The asset and its body or joint
selection come from ``asset_cfg`` (an Isaac Lab ``SceneEntityCfg`` with ``body_names`` or
``joint_names``, names or regexes). ``values`` holds one row per env in ``env_ids``: a scalar per
env is broadcast to every selected body or joint, a row of one value per selected item sets
each item. Vector quantities (centre of mass offsets, velocities) take their components per
env, broadcast to the items, or ``items * components`` values per env.

Each quantity has a reader (``read(env, "body_mass", asset_cfg)``): tests, users and the
recording of a task's own randomization check that a record is what the simulation ran with.
Scale and offset appliers start from a default, so repeated resets do not compound: the
asset's own default joint state for joint positions and velocities, else the value the asset
had before any applier wrote it.

Example::

    variation_event("robot.mass_scale", {"type": "uniform", "low": 0.8, "high": 1.2},
                    apply={"func": mass_scale, "asset": "robot", "bodies": ["torso"]})
    read(env, "body_mass", selection(env, "robot", bodies=["torso"]))  # (num_envs, 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import warp as wp
from isaaclab.envs import ManagerBasedEnv
from isaaclab.managers import SceneEntityCfg
from isaaclab.utils import math as math_utils
from newton import ModelFlags

Applier = Callable[[ManagerBasedEnv, torch.Tensor, torch.Tensor, SceneEntityCfg], None]
Reader = Callable[[ManagerBasedEnv, SceneEntityCfg], torch.Tensor]
Writer = Callable[[ManagerBasedEnv, torch.Tensor, torch.Tensor, SceneEntityCfg], None]

_DEFAULTS = "_arena_recording_defaults"
_WRITES = "_arena_recording_writes"


def selection(
    env: ManagerBasedEnv,
    asset: str,
    *,
    bodies: str | Sequence[str] | None = None,
    joints: str | Sequence[str] | None = None,
) -> SceneEntityCfg:
    """A resolved ``SceneEntityCfg`` for ``asset`` and its bodies or joints (names or regexes)."""
    cfg = SceneEntityCfg(
        asset,
        body_names=[bodies] if isinstance(bodies, str) else bodies,
        joint_names=[joints] if isinstance(joints, str) else joints,
        preserve_order=True,
    )
    cfg.resolve(env.scene)
    return cfg


def _ids(ids: slice | Sequence[int] | torch.Tensor, count: int, device: str) -> torch.Tensor:
    if isinstance(ids, slice):
        return torch.arange(count, device=device)[ids]
    return torch.as_tensor(ids, device=device).long()


def _bodies(env: ManagerBasedEnv, asset_cfg: SceneEntityCfg) -> torch.Tensor:
    asset = env.scene[asset_cfg.name]
    return _ids(asset_cfg.body_ids, asset.num_bodies, env.device)


def _joints(env: ManagerBasedEnv, asset_cfg: SceneEntityCfg) -> torch.Tensor:
    asset = env.scene[asset_cfg.name]
    return _ids(asset_cfg.joint_ids, asset.num_joints, env.device)


def per_item(values: torch.Tensor, items: int, width: int = 1) -> torch.Tensor:
    """Values per env as ``(n, items)`` (width 1) or ``(n, items, width)``.

    A scalar per env fills every item (and, for vectors, the first component); a row of
    ``width`` components is the same for every item; ``items * width`` values set each item.
    """
    n = values.shape[0]
    flat = values.reshape(n, -1).float()
    if flat.shape[1] == 1 and width > 1:
        flat = torch.cat([flat, flat.new_zeros(n, width - 1)], dim=1)
    if flat.shape[1] == width:
        rows = flat.reshape(n, 1, width).expand(n, items, width)
    elif flat.shape[1] == items * width:
        rows = flat.reshape(n, items, width)
    else:
        expected = f"1, {width} or {items * width}" if width > 1 else f"1 or {items}"
        raise ValueError(
            f"{flat.shape[1]} values per env for {items} selected items; expected {expected}"
        )
    return (rows[..., 0] if width == 1 else rows).contiguous()


def _default(env: ManagerBasedEnv, quantity: str, asset: str, read: Callable[[], torch.Tensor]):
    """The value ``quantity`` of ``asset`` had when an applier first touched it (kept on the env)."""
    defaults = env.__dict__.setdefault(_DEFAULTS, {})
    if (quantity, asset) not in defaults:
        defaults[quantity, asset] = read().clone()
    return defaults[quantity, asset]


@dataclass(frozen=True)
class Write:
    """Who writes which quantity of which asset (items: body or joint ids; None: the whole)."""

    writer: str
    mode: str
    asset: str | None
    quantity: str
    items: frozenset[int] | None = None

    def overlaps(self, other: Write) -> bool:
        """Both write the same values when the env resets (startup values are lost to resets)."""
        modes = {"startup", "reset"}
        return (
            self.mode in modes
            and other.mode in modes
            and (self.asset, self.quantity) == (other.asset, other.quantity)
            and (self.items is None or other.items is None or bool(self.items & other.items))
        )


def claim(env: ManagerBasedEnv, write: Write) -> None:
    """Register ``write`` on the env; warn, naming both, when an earlier writer overlaps it."""
    writes: list[Write] = env.__dict__.setdefault(_WRITES, [])
    for other in writes:
        if other.overlaps(write):
            where = f" of {write.asset!r}" if write.asset else ""
            warnings.warn(
                f"{other.writer} ({other.mode}) and {write.writer} ({write.mode}) both write "
                f"{write.quantity}{where}: whichever runs last wins, and the other one's "
                "records are not what the simulation ran with",
                stacklevel=2,
            )
    writes.append(write)


def writes(
    apply: Callable[..., object], env: ManagerBasedEnv, asset_cfg: SceneEntityCfg | None
) -> tuple[str, frozenset[int] | None] | None:
    """The quantity an applier writes and the items it selects, if it declares one."""
    quantity = getattr(apply, "quantity", None)
    if quantity is None:
        return None
    quantity = _ALIASES.get(quantity, quantity)
    items = getattr(apply, "items", None)
    if items is None or asset_cfg is None:
        return quantity, None
    return quantity, frozenset(items(env, asset_cfg).tolist())


_ALIASES = {"actuator_stiffness": "joint_stiffness", "actuator_damping": "joint_damping"}
"""Implicit actuators' gains are the solver's joint gains: one quantity for conflicts."""


@dataclass(frozen=True)
class Quantity:
    """A per-item simulation property: how to read it for all envs and write it for some."""

    name: str
    width: int
    """Components per item (1 for scalars, 3 for a centre-of-mass position)."""
    items: Callable[[ManagerBasedEnv, SceneEntityCfg], torch.Tensor]
    read_all: Callable[[ManagerBasedEnv, SceneEntityCfg], torch.Tensor]
    """Values of every item of the asset, ``(num_envs, all items[, width])``."""
    write: Writer
    """Writes ``(n, selected items[, width])`` values for ``env_ids``."""
    defaults: Callable[[ManagerBasedEnv, SceneEntityCfg], torch.Tensor] | None = None
    """The asset's own defaults (joint state); else the value before the first applier wrote."""

    def read(self, env: ManagerBasedEnv, asset_cfg: SceneEntityCfg) -> torch.Tensor:
        return self.read_all(env, asset_cfg)[:, self.items(env, asset_cfg)].clone()

    def item_names(self, env: ManagerBasedEnv, asset_cfg: SceneEntityCfg) -> list[str]:
        """Names of the selected bodies or joints."""
        asset = env.scene[asset_cfg.name]
        names = asset.joint_names if self.items is _joints else asset.body_names
        return [names[i] for i in self.items(env, asset_cfg).tolist()]

    def default(self, env: ManagerBasedEnv, asset_cfg: SceneEntityCfg) -> torch.Tensor:
        if self.defaults is not None:
            full = self.defaults(env, asset_cfg)
        else:
            full = _default(env, self.name, asset_cfg.name, lambda: self.read_all(env, asset_cfg))
        return full[:, self.items(env, asset_cfg)]

    def applier(self, operation: str) -> Applier:
        """Set (``abs``), scale (``scale``) or offset (``add``) the item's default value."""

        def apply(
            env: ManagerBasedEnv,
            env_ids: torch.Tensor,
            values: torch.Tensor,
            asset_cfg: SceneEntityCfg,
        ) -> None:
            count = self.items(env, asset_cfg).shape[0]
            rows = per_item(values.to(env.device), count, self.width)
            if operation != "abs":
                default = self.default(env, asset_cfg)[env_ids]
                rows = default * rows if operation == "scale" else default + rows
            self.write(env, env_ids, rows, asset_cfg)

        apply.__name__ = self.name if operation == "abs" else f"{self.name}_{operation}"
        apply.__doc__ = f"{self.name}: {operation} per env and selected item."
        apply.quantity, apply.items = self.name, self.items  # type: ignore[attr-defined]
        return apply


def _data(field: str) -> Callable[[ManagerBasedEnv, SceneEntityCfg], torch.Tensor]:
    return lambda env, cfg: getattr(env.scene[cfg.name].data, field).torch


def _write_masses(
    env: ManagerBasedEnv, env_ids: torch.Tensor, rows: torch.Tensor, cfg: SceneEntityCfg
) -> None:
    """Masses; the inertia scales with each body's mass (same density, as Isaac Lab does)."""
    asset = env.scene[cfg.name]
    bodies = _bodies(env, cfg)
    old = asset.data.body_mass.torch[env_ids][:, bodies]
    inertia = asset.data.body_inertia.torch[env_ids][:, bodies] * (rows / old)[..., None]
    asset.set_masses_index(masses=rows.contiguous(), body_ids=bodies.int(), env_ids=env_ids.int())
    asset.set_inertias_index(
        inertias=inertia.contiguous(), body_ids=bodies.int(), env_ids=env_ids.int()
    )


def _body_writer(method: str, argument: str) -> Writer:
    def write(
        env: ManagerBasedEnv, env_ids: torch.Tensor, rows: torch.Tensor, cfg: SceneEntityCfg
    ) -> None:
        getattr(env.scene[cfg.name], method)(
            **{argument: rows.contiguous()}, body_ids=_bodies(env, cfg).int(), env_ids=env_ids.int()
        )

    return write


def _joint_writer(method: str, argument: str) -> Writer:
    def write(
        env: ManagerBasedEnv, env_ids: torch.Tensor, rows: torch.Tensor, cfg: SceneEntityCfg
    ) -> None:
        getattr(env.scene[cfg.name], method)(
            **{argument: rows.contiguous()},
            joint_ids=_joints(env, cfg).int(),
            env_ids=env_ids.int(),
        )

    return write


# --- shape materials: one value per selected body, written to each of its shapes -----------


def shape_groups(env: ManagerBasedEnv, cfg: SceneEntityCfg) -> list[list[int]]:
    """Shape indices (in the solver view) of each selected body; a rigid object is one body."""
    asset = env.scene[cfg.name]
    if not hasattr(asset, "map_body_ids_to_backend"):
        return [list(range(shape_view("shape_material_mu")(env, cfg).shape[1]))]
    backend = asset.map_body_ids_to_backend(_bodies(env, cfg).tolist())
    return [list(asset.root_view.body_shapes[b]) for b in backend]


def _model(env: ManagerBasedEnv):
    return env.sim.physics_manager.get_model()


def shape_view(attribute: str) -> Callable[[ManagerBasedEnv, SceneEntityCfg], torch.Tensor]:
    """A reader of a per-shape material attribute (``shape_material_mu``, ...): (envs, shapes)."""

    def view(env: ManagerBasedEnv, cfg: SceneEntityCfg) -> torch.Tensor:
        return wp.to_torch(
            env.scene[cfg.name].root_view.get_attribute(attribute, _model(env))[:, 0]
        )

    return view


def _shape_quantity(name: str, attribute: str) -> Quantity:
    view = shape_view(attribute)

    def read_all(env: ManagerBasedEnv, cfg: SceneEntityCfg) -> torch.Tensor:
        """Per selected body, the value of its first shape (appliers give all its shapes one)."""
        first = [group[0] for group in shape_groups(env, cfg)]
        values = view(env, cfg)[:, first]
        return values.new_zeros(values.shape[0], env.scene[cfg.name].num_bodies).index_copy_(
            1, _bodies(env, cfg), values
        )

    def write(
        env: ManagerBasedEnv, env_ids: torch.Tensor, rows: torch.Tensor, cfg: SceneEntityCfg
    ) -> None:
        groups = shape_groups(env, cfg)
        shapes = torch.tensor([s for group in groups for s in group], device=env.device)
        owner = torch.tensor(
            [i for i, group in enumerate(groups) for _ in group], device=env.device
        )
        target = view(env, cfg)
        target[env_ids[:, None], shapes] = rows[:, owner].to(target.dtype)
        env.sim.physics_manager.add_model_change(ModelFlags.SHAPE_PROPERTIES)

    return Quantity(name, 1, _bodies, read_all, write)


# --- actuator gains: implicit actuators are the solver's joint gains, explicit ones their own --


def _actuator_gain(name: str, gain: str) -> Quantity:
    sim_writer = _joint_writer(f"write_joint_{gain}_to_sim_index", gain)

    def groups(env: ManagerBasedEnv, cfg: SceneEntityCfg):
        asset = env.scene[cfg.name]
        native = getattr(asset.actuators, "_native_group_names", set())
        for group, actuator in asset.actuators.items():
            if group in native:
                raise NotImplementedError(
                    f"actuator group {group!r} of {cfg.name!r} runs in Newton's own controller; "
                    "its gains are written by Isaac Lab's randomize_actuator_gains only"
                )
            yield actuator, _ids(actuator.joint_indices, asset.num_joints, env.device)

    def read_all(env: ManagerBasedEnv, cfg: SceneEntityCfg) -> torch.Tensor:
        values = getattr(env.scene[cfg.name].data, f"joint_{gain}").torch.clone()
        for actuator, joints in groups(env, cfg):
            if not actuator.is_implicit_model:
                values[:, joints] = getattr(actuator, gain)
        return values

    def write(
        env: ManagerBasedEnv, env_ids: torch.Tensor, rows: torch.Tensor, cfg: SceneEntityCfg
    ) -> None:
        selected = _joints(env, cfg)
        for actuator, joints in groups(env, cfg):
            mine = torch.isin(selected, joints)
            if not mine.any():
                continue
            if actuator.is_implicit_model:
                part = SceneEntityCfg(cfg.name, joint_ids=selected[mine].tolist())
                sim_writer(env, env_ids, rows[:, mine], part)
            else:
                columns = torch.searchsorted(joints, selected[mine])
                getattr(actuator, gain)[env_ids[:, None], columns] = rows[:, mine]

    return Quantity(name, 1, _joints, read_all, write)


def _write_joint_friction(
    env: ManagerBasedEnv, env_ids: torch.Tensor, rows: torch.Tensor, cfg: SceneEntityCfg
) -> None:
    env.scene[cfg.name].write_joint_friction_coefficient_to_sim_index(
        joint_friction_coeff=rows.contiguous(),
        joint_ids=_joints(env, cfg).int(),
        env_ids=env_ids.int(),
    )


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("body_mass", 1, _bodies, _data("body_mass"), _write_masses),
        Quantity(
            "body_com", 3, _bodies, _data("body_com_pos_b"), _body_writer("set_coms_index", "coms")
        ),
        Quantity(
            "body_inertia",
            9,
            _bodies,
            _data("body_inertia"),
            _body_writer("set_inertias_index", "inertias"),
        ),
        _shape_quantity("friction", "shape_material_mu"),
        _shape_quantity("restitution", "shape_material_restitution"),
        Quantity(
            "joint_stiffness",
            1,
            _joints,
            _data("joint_stiffness"),
            _joint_writer("write_joint_stiffness_to_sim_index", "stiffness"),
        ),
        Quantity(
            "joint_damping",
            1,
            _joints,
            _data("joint_damping"),
            _joint_writer("write_joint_damping_to_sim_index", "damping"),
        ),
        Quantity(
            "joint_friction", 1, _joints, _data("joint_friction_coeff"), _write_joint_friction
        ),
        Quantity(
            "joint_armature",
            1,
            _joints,
            _data("joint_armature"),
            _joint_writer("write_joint_armature_to_sim_index", "armature"),
        ),
        Quantity(
            "joint_position",
            1,
            _joints,
            _data("joint_pos"),
            _joint_writer("write_joint_position_to_sim_index", "position"),
            _data("default_joint_pos"),
        ),
        Quantity(
            "joint_velocity",
            1,
            _joints,
            _data("joint_vel"),
            _joint_writer("write_joint_velocity_to_sim_index", "velocity"),
            _data("default_joint_vel"),
        ),
        _actuator_gain("actuator_stiffness", "stiffness"),
        _actuator_gain("actuator_damping", "damping"),
    )
}


def read(env: ManagerBasedEnv, quantity: str, asset_cfg: SceneEntityCfg) -> torch.Tensor:
    """Current values of a quantity for every env: ``(num_envs, selected items[, width])``."""
    return QUANTITIES[quantity].read(env, asset_cfg)


# --- appliers per item: absolute values, scales and offsets of the default ------------------

mass = QUANTITIES["body_mass"].applier("abs")
mass_scale = QUANTITIES["body_mass"].applier("scale")
mass_offset = QUANTITIES["body_mass"].applier("add")
com_offset = QUANTITIES["body_com"].applier("add")
inertia_scale = QUANTITIES["body_inertia"].applier("scale")
friction = QUANTITIES["friction"].applier("abs")
friction_scale = QUANTITIES["friction"].applier("scale")
restitution = QUANTITIES["restitution"].applier("abs")
joint_stiffness = QUANTITIES["joint_stiffness"].applier("abs")
joint_stiffness_scale = QUANTITIES["joint_stiffness"].applier("scale")
joint_damping = QUANTITIES["joint_damping"].applier("abs")
joint_damping_scale = QUANTITIES["joint_damping"].applier("scale")
joint_friction = QUANTITIES["joint_friction"].applier("abs")
joint_armature = QUANTITIES["joint_armature"].applier("abs")
actuator_stiffness = QUANTITIES["actuator_stiffness"].applier("abs")
actuator_stiffness_scale = QUANTITIES["actuator_stiffness"].applier("scale")
actuator_damping = QUANTITIES["actuator_damping"].applier("abs")
actuator_damping_scale = QUANTITIES["actuator_damping"].applier("scale")


joint_position_offset = QUANTITIES["joint_position"].applier("add")
joint_position_scale = QUANTITIES["joint_position"].applier("scale")
joint_velocity_offset = QUANTITIES["joint_velocity"].applier("add")
joint_velocity_scale = QUANTITIES["joint_velocity"].applier("scale")


# --- root state ------------------------------------------------------------------------------


def _root_rows(values: torch.Tensor, width: int) -> torch.Tensor:
    """A scalar per env is the first component; otherwise the leading components are given."""
    flat = values.reshape(values.shape[0], -1).float()
    rows = flat.new_zeros(flat.shape[0], width)
    rows[:, : flat.shape[1]] = flat
    return rows


def root_velocity(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Root velocity in the world frame: a speed along +x, a linear (3) or full (6) velocity."""
    asset = env.scene[asset_cfg.name]
    velocity = _root_rows(values.to(env.device), 6)
    asset.write_root_velocity_to_sim_index(root_velocity=velocity, env_ids=env_ids.int())


def push(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Add a velocity to the root (a push): along +x, linear (3) or linear and angular (6)."""
    asset = env.scene[asset_cfg.name]
    velocity = asset.data.root_com_vel_w.torch[env_ids] + _root_rows(values.to(env.device), 6)
    asset.write_root_velocity_to_sim_index(root_velocity=velocity, env_ids=env_ids.int())


def root_position_offset(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Start pose = default pose + offset: an offset along x, or an (x, y, z) offset."""
    asset = env.scene[asset_cfg.name]
    pose = asset.data.default_root_pose.torch[env_ids].clone()
    pose[:, :3] += env.scene.env_origins[env_ids] + _root_rows(values.to(env.device), 3)
    asset.write_root_pose_to_sim_index(root_pose=pose, env_ids=env_ids.int())


def yaw(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Start heading: the default orientation turned by ``values`` radians about world z."""
    asset = env.scene[asset_cfg.name]
    pose = asset.data.root_pose_w.torch[env_ids].clone()
    angle = values.to(env.device).reshape(-1).float()
    turn = math_utils.quat_from_euler_xyz(torch.zeros_like(angle), torch.zeros_like(angle), angle)
    pose[:, 3:7] = math_utils.quat_mul(turn, asset.data.default_root_pose.torch[env_ids][:, 3:7])
    asset.write_root_pose_to_sim_index(root_pose=pose, env_ids=env_ids.int())


def gravity(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Gravity per env: a magnitude pointing down, or a 3-vector (Newton: one per world)."""
    field = wp.to_torch(_model(env).gravity)  # one row per world, then the global world
    rows = torch.zeros(env_ids.shape[0], 3, device=field.device, dtype=field.dtype)
    if values.ndim == 1:
        rows[:, 2] = -values.to(field.dtype)
    else:
        rows[:] = values.to(field.dtype)
    field[env_ids] = rows
    env.sim.physics_manager.add_model_change(ModelFlags.MODEL_PROPERTIES)


for _apply, _quantity in (
    (root_velocity, "root_velocity"),
    (push, "root_velocity"),
    (root_position_offset, "root_pose"),
    (yaw, "root_pose"),
    (gravity, "gravity"),
):
    _apply.quantity = _quantity  # type: ignore[attr-defined]
gravity.needs_asset = False  # type: ignore[attr-defined]


def needs_asset(apply: Callable[..., object]) -> bool:
    """Whether an applier writes into a scene asset (every one but ``gravity``)."""
    return getattr(apply, "needs_asset", True)


# --- read-backs that are not per-item quantities ---------------------------------------------


def read_mass(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    """Mass of the asset's first body."""
    return env.scene[asset].data.body_mass.torch[:, 0].clone()


def read_friction(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    """Friction of the asset's first shape."""
    return shape_view("shape_material_mu")(env, SceneEntityCfg(asset))[:, 0].clone()


def read_gravity(env: ManagerBasedEnv) -> torch.Tensor:
    return wp.to_torch(_model(env).gravity)[: env.num_envs].clone()


def read_root_position(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    """Root position relative to each env origin."""
    return env.scene[asset].data.root_link_pos_w.torch - env.scene.env_origins


def read_root_velocity(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    """Root velocity ``(num_envs, 6)``: linear, then angular, in the world frame."""
    return env.scene[asset].data.root_com_vel_w.torch.clone()


def read_yaw(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    """Root heading about world z relative to the default orientation, in ``(-pi, pi]``."""
    data = env.scene[asset].data
    relative = math_utils.quat_mul(
        data.root_link_quat_w.torch, math_utils.quat_conjugate(data.default_root_pose.torch[:, 3:7])
    )
    return math_utils.wrap_to_pi(math_utils.euler_xyz_from_quat(relative)[2])
