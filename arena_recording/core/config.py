"""Every config of arena-recording, defined once: recorder, terms, variations and samplers.

The same dataclasses are the Python API, the schemas Hydra type-checks while it composes (the
plugin stores them; an app declares ``recorder: RecorderCfg | None = None`` and
``variations: dict[str, VariationCfg]``) and the input of validation. This module imports
neither torch nor Hydra: the Hydra plugin imports it in every Hydra process, and the live
objects (``core.sampling``, ``core.variations``, ``core.terms``) are built from it.

Why one sampler dataclass with every field: OmegaConf 2.3 has no unions, so a node can have one
type only. ``SamplerCfg`` has the fields of every distribution, ``type`` an enum, and each field
typed: a node typed ``SamplerCfg`` takes any sampler written as plain YAML or on the command
line (``{type: uniform, low: 8, high: 12}``) and rejects a bad ``type`` (``unifrom``), a
misspelled field (``hgih``) or a value of the wrong type (``p: abc``) while Hydra composes,
with the config path in the message. Per-type dataclasses selected by a discriminator would
need union support that OmegaConf lacks. The per-type classes (``UniformCfg`` ...) are
subclasses that fix ``type``, own their fields and hold their defaults: ``checked`` rejects a
field of another type that is set and fills in the defaults. ``low`` and ``high`` (and
``mean``, ``std``, ``value``) are scalars or vectors, so they are typed ``Any`` and checked by
validation. Enum member names are the config strings because OmegaConf reads enums by name.

Validation is plain Python and raises ``ConfigError`` naming the config path
(``variations.cube.mass.sampler.low``); mappings (YAML, JSON, Python dicts) go through the
same field and type checks as OmegaConf applies, so an untyped config fails like a typed one.

Example::

    cfg = variation_cfg(
        {"sampler": {"type": "uniform", "low": 0.5, "high": 2.0}},
        key="cube.mass",
        path="variations.cube.mass",
    )
    cfg.sampler  # UniformCfg(low=0.5, high=2.0)
    cfg.sampler.describe()["bounds"]  # 'hard'
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from arena_recording.errors import ConfigError

if TYPE_CHECKING:
    from arena_recording.core.sampling import SamplerBase

_SOFT_SPAN = 3.0  # an untruncated normal is described by mean -/+ 3 std


class Scope(StrEnum):
    """When a variation is drawn: once per build, at each reset, or during an episode."""

    build = "build"
    episode = "episode"
    interval = "interval"


class SamplerType(StrEnum):
    """The distributions a sampler config can name."""

    uniform = "uniform"
    log_uniform = "log_uniform"
    normal = "normal"
    choice = "choice"
    bernoulli = "bernoulli"
    constant = "constant"


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(path, message)


_FLOAT32_MAX = 3.4028234663852886e38


def is_number(value: Any) -> bool:
    """A real number, not a bool (``True`` is an int to Python, a category to us)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _components(path: str, value: Any) -> list[float]:
    """A finite scalar or a non-empty flat list of finite numbers, as a list."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items or not all(is_number(v) for v in items):
        _fail(path, f"{value!r} must be a number or a non-empty list of numbers")
    if not all(math.isfinite(v) for v in items):
        _fail(path, f"{value!r} must be finite")
    if any(abs(v) > _FLOAT32_MAX for v in items):  # draws may be float32 (Isaac Lab, GPU)
        _fail(path, f"{value!r} is beyond float32's range (+/-{_FLOAT32_MAX:.7g})")
    return [float(v) for v in items]


def _shape(path: str, values: Mapping[str, Any]) -> tuple[int, ...]:
    """The shape the named scalars or vectors broadcast to: ``()`` or ``(n,)``."""
    lengths = {len(v) for v in values.values() if isinstance(v, list | tuple)}
    if len(lengths - {1}) > 1:
        text = " and ".join(f"{name} {value!r}" for name, value in values.items())
        _fail(path, f"{text} have different lengths")
    return (max(lengths),) if lengths else ()


def _spread(values: list[float], size: int) -> list[float]:
    return values * size if len(values) == 1 else values


def _enum(enum: type[StrEnum], value: Any, path: str) -> Any:
    if isinstance(value, enum):
        return value
    if isinstance(value, str) and value in enum.__members__:
        return enum[value]
    _fail(path, f"{value!r} is not one of [{', '.join(enum.__members__)}]")


@dataclass(kw_only=True, repr=False)
class SamplerCfg:
    """A sampler config of any ``type``: the node Hydra type-checks (see the module docstring).

    Fields that do not belong to ``type`` stay ``None``. In Python, use the per-type classes.
    """

    type: SamplerType = SamplerType.uniform
    low: Any = None
    high: Any = None
    mean: Any = None
    std: Any = None
    choices: list[Any] | None = None
    weights: list[float] | None = None
    p: float | None = None
    value: Any = None

    def __post_init__(self) -> None:
        self.type = _enum(SamplerType, self.type, "sampler.type")
        if type(self) is not SamplerCfg:  # a per-type config validates on construction
            self._values("sampler")

    def __repr__(self) -> str:
        cls = SAMPLERS[self.type]
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in cls.own_fields())
        return f"{cls.__name__}({fields})"

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """The fields of this sampler type (all of them on ``SamplerCfg`` itself)."""
        own = cls.__dict__.get("__annotations__", {})
        return tuple(name for name in own if name != "type")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The type's fields and their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name in cls.own_fields()}

    def _values(self, path: str) -> dict[str, Any]:
        """The type's fields (defaults filled in), validated; errors name ``path.field``."""
        cls = SAMPLERS[self.type]
        own = cls.own_fields()
        for name in SamplerCfg.own_fields():
            if name not in own and getattr(self, name) is not None:
                _fail(
                    f"{path}.{name}",
                    f"is not a field of a {self.type} sampler (its fields: {', '.join(own)})",
                )
        values = {
            name: default if getattr(self, name) is None else getattr(self, name)
            for name, default in cls.defaults().items()
        }
        cls._check(values, path)
        return values

    def build(self, key: str) -> SamplerBase:
        """The live sampler drawing for variation ``key`` (``core.sampling``: needs torch)."""
        from arena_recording.core.sampling import build_sampler

        return build_sampler(self, key)

    def checked(self, path: str = "sampler") -> SamplerCfg:
        """This config as its type's class, defaults filled in and validated."""
        return SAMPLERS[self.type](**self._values(path))

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one drawn value: ``()`` for a scalar, ``(n,)`` for a vector."""
        return self.checked().shape if type(self) is SamplerCfg else ()

    @property
    def kind(self) -> str:
        """``continuous``, ``categorical`` or ``boolean``."""
        return self.checked().kind if type(self) is SamplerCfg else "continuous"

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``type`` as a string and the type's fields."""
        cfg = self.checked()
        return {"type": cfg.type.value, **{name: getattr(cfg, name) for name in cfg.own_fields()}}

    def describe(self) -> dict[str, Any]:
        """The factor schema's sampler part: distribution, kind, per-component bounds (``hard``
        or ``soft``), choices and weights, and the sampler's own fields as ``params``."""
        cfg = self.checked()
        size = math.prod(cfg.shape)
        low, high, bounds = cfg._bounds(size)
        choices, weights = cfg._categories()
        return {
            "distribution": cfg.type.value,
            "kind": cfg.kind,
            "low": low,
            "high": high,
            "bounds": bounds,
            "choices": choices,
            "weights": weights,
            "params": {name: getattr(cfg, name) for name in cfg.own_fields()},
        }

    def _bounds(self, size: int) -> tuple[list[float] | None, list[float] | None, str | None]:
        return None, None, None

    def _categories(self) -> tuple[list[Any] | None, list[float] | None]:
        return None, None


@dataclass(kw_only=True, repr=False)
class UniformCfg(SamplerCfg):
    """Uniform on ``[low, high]``; vector bounds give one factor component per entry."""

    type: SamplerType = SamplerType.uniform
    low: Any = 0.0
    high: Any = 1.0

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        low = _components(f"{path}.low", values["low"])
        high = _components(f"{path}.high", values["high"])
        size = math.prod(_shape(path, {"low": values["low"], "high": values["high"]}))
        if any(lo > hi for lo, hi in zip(_spread(low, size), _spread(high, size), strict=True)):
            _fail(f"{path}.low", f"low {values['low']!r} must be <= high {values['high']!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        return _shape("sampler", {"low": self.low, "high": self.high})

    def _bounds(self, size: int) -> tuple[list[float], list[float], str]:
        low = _spread(_components("low", self.low), size)
        return low, _spread(_components("high", self.high), size), "hard"


@dataclass(kw_only=True, repr=False)
class LogUniformCfg(UniformCfg):
    """Log-uniform on ``[low, high]`` with ``0 < low <= high`` (scale factors, stiffnesses)."""

    type: SamplerType = SamplerType.log_uniform
    low: Any = 0.1
    high: Any = 10.0

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        super()._check(values, path)
        if any(lo <= 0 for lo in _components(f"{path}.low", values["low"])):
            _fail(f"{path}.low", f"low {values['low']!r} must be > 0")


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass(kw_only=True, repr=False)
class NormalCfg(SamplerCfg):
    """Normal(mean, std), truncated to ``[low, high]`` when either bound is given."""

    type: SamplerType = SamplerType.normal
    mean: Any = 0.0
    std: Any = 1.0
    low: Any = None
    high: Any = None

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        given = {name: v for name, v in values.items() if v is not None}
        size = math.prod(_shape(path, given))
        mean = _spread(_components(f"{path}.mean", values["mean"]), size)
        std = _spread(_components(f"{path}.std", values["std"]), size)
        if any(s <= 0 for s in std):
            _fail(f"{path}.std", f"std {values['std']!r} must be > 0")
        low, high = cls._limits(values, size, path)
        if any(lo >= hi for lo, hi in zip(low, high, strict=True)):
            _fail(f"{path}.low", f"low {values['low']!r} must be < high {values['high']!r}")
        for m, s, lo, hi in zip(mean, std, low, high, strict=True):
            if _normal_cdf((hi - m) / s) - _normal_cdf((lo - m) / s) <= 1e-12:
                _fail(path, f"the truncation interval [{lo}, {hi}] has no mass")

    @staticmethod
    def _limits(values: Mapping[str, Any], size: int, path: str) -> tuple[list[float], ...]:
        """Per-component truncation bounds, infinite where not given."""
        limits = []
        for name, missing in (("low", -math.inf), ("high", math.inf)):
            value = values[name]
            parts = [missing] if value is None else _components(f"{path}.{name}", value)
            limits.append(_spread(parts, size))
        return tuple(limits)

    @property
    def shape(self) -> tuple[int, ...]:
        values = {name: getattr(self, name) for name in self.own_fields()}
        return _shape("sampler", {k: v for k, v in values.items() if v is not None})

    def _bounds(self, size: int) -> tuple[list[float], list[float], str]:
        """Hard bounds when truncated on both sides; mean -/+ 3 std (soft) on an open side."""
        mean = _spread(_components("mean", self.mean), size)
        std = _spread(_components("std", self.std), size)
        low = [m - _SOFT_SPAN * s for m, s in zip(mean, std, strict=True)]
        high = [m + _SOFT_SPAN * s for m, s in zip(mean, std, strict=True)]
        if self.low is not None:
            low = _spread(_components("low", self.low), size)
        if self.high is not None:
            high = _spread(_components("high", self.high), size)
        hard = self.low is not None and self.high is not None
        return low, high, "hard" if hard else "soft"


@dataclass(kw_only=True, repr=False)
class ChoiceCfg(SamplerCfg):
    """One of ``choices`` (numbers, strings or booleans), optionally weighted. The sampler
    draws an index; records show the choice itself, exactly as written."""

    type: SamplerType = SamplerType.choice
    choices: list[Any] | None = None
    weights: list[float] | None = None

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        choices, weights = values["choices"], values["weights"]
        if choices is None:
            _fail(f"{path}.choices", "choices are required")
        if not isinstance(choices, list | tuple):
            _fail(f"{path}.choices", f"choices must be a list, got {choices!r}")
        if not choices:
            _fail(f"{path}.choices", "choices must not be empty")
        for i, choice in enumerate(choices):
            if not isinstance(choice, str | int | float | bool):
                _fail(f"{path}.choices[{i}]", f"{choice!r} is not a number, string or bool")
        if weights is None:
            return
        if not isinstance(weights, list | tuple) or len(weights) != len(choices):
            count = len(weights) if isinstance(weights, list | tuple) else weights
            _fail(f"{path}.weights", f"{count} weights for {len(choices)} choices")
        if not all(is_number(w) and math.isfinite(w) and w >= 0 for w in weights):
            _fail(f"{path}.weights", f"weights {weights!r} must be >= 0")
        if sum(weights) <= 0:
            _fail(f"{path}.weights", "weights must not all be zero")

    @property
    def kind(self) -> str:
        return "categorical"

    def _categories(self) -> tuple[list[Any], list[float] | None]:
        weights = None if self.weights is None else [float(w) for w in self.weights]
        return list(self.choices or []), weights


@dataclass(kw_only=True, repr=False)
class BernoulliCfg(SamplerCfg):
    """True with probability ``p``."""

    type: SamplerType = SamplerType.bernoulli
    p: float | None = 0.5

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        p = values["p"]
        if not is_number(p) or not 0.0 <= p <= 1.0:
            _fail(f"{path}.p", f"p {p!r} must be in [0, 1]")

    @property
    def kind(self) -> str:
        return "boolean"

    def _categories(self) -> tuple[list[Any], list[float]]:
        p = float(self.p or 0.0)
        return [False, True], [1.0 - p, p]


@dataclass(kw_only=True, repr=False)
class ConstantCfg(SamplerCfg):
    """Always ``value`` (a scalar or a vector): pins a factor without removing it from records."""

    type: SamplerType = SamplerType.constant
    value: Any = 0.0

    @classmethod
    def _check(cls, values: dict[str, Any], path: str) -> None:
        _components(f"{path}.value", values["value"])

    @property
    def shape(self) -> tuple[int, ...]:
        return _shape("sampler", {"value": self.value})

    def _bounds(self, size: int) -> tuple[list[float], list[float], str]:
        value = _spread(_components("value", self.value), size)
        return value, list(value), "hard"


SAMPLERS: dict[SamplerType, type[SamplerCfg]] = {
    cls.__dataclass_fields__["type"].default: cls
    for cls in (UniformCfg, LogUniformCfg, NormalCfg, ChoiceCfg, BernoulliCfg, ConstantCfg)
}


@dataclass
class VariationCfg:
    """A named factor: how it is sampled, when, and the adapter's ``apply`` block.

    ``key`` (dotted, e.g. ``cube.mass``) defaults to the variation's key in its ``variations``
    mapping. ``apply`` belongs to the env adapter: gymnasium takes ``{attribute: NAME}`` (the
    sub-env attribute to set, default the key), Isaac Lab ``{func, asset, params}``.
    """

    key: str = ""
    sampler: SamplerCfg | None = None
    scope: Scope = Scope.episode
    enabled: bool = True
    apply: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (strings for enums), as a config file would hold it."""
        return {
            "key": self.key,
            "sampler": None if self.sampler is None else self.sampler.to_dict(),
            "scope": Scope(self.scope).value,
            "enabled": self.enabled,
            "apply": None if self.apply is None else dict(self.apply),
        }


@dataclass
class TermCfg:
    """A recorder term: the function, its extra keyword ``params``, and a switch.

    ``func`` is an import path (``pkg.module:function``), a callable, or a ``_target_`` node
    whose other fields are params, which is what hydra-zen's
    ``builds(func, populate_full_signature=True, zen_partial=True, zen_exclude=["batch"])``
    makes: OmegaConf then checks the params against the function's signature while composing.
    """

    func: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class ReplayCfg:
    """Which recorded episodes a job runs again (``arena_recording.core.replay``).

    ``source`` is a run dir, a sweep dir or a records file; ``where`` a pandas query over its
    episode frame (``success == false``, ```variations.gravity` > 30``); ``episodes`` explicit
    ``episode_id`` values. Both select together; neither selects every episode.
    """

    source: str | None = None
    where: str | None = None
    episodes: list[int] | None = None


class WriterKind(StrEnum):
    """Where records are replayed, encoded and written: ``thread`` (a thread of the process
    that steps the env), ``process`` (a child process: off that process's interpreter lock),
    ``auto`` (a process for a CUDA env, else a thread)."""

    auto = "auto"
    thread = "thread"
    process = "process"


@dataclass
class RecorderCfg:
    """What a session records and how it writes. A Hydra job records when its ``recorder``
    node is a ``RecorderCfg`` (what ``+recorder=default`` selects).

    ``terms`` maps a term name to its config; ``fsync`` forces every batch to disk (at most one
    fsync per flush); ``resume`` appends to an existing recording in the output dir
    instead of refusing to touch it; ``flush_every_s`` bounds what a hard kill can lose:
    records reach the file at least that often (``0``: at every reset batch, on the stepping
    thread); ``writer`` where records are encoded and written (``WriterKind``: by default a
    child process for a CUDA env); ``report`` asks the Hydra callback for an HTML report
    (``arena_recording.analysis.report``) when the job, and the multirun, ends.
    ``replay`` runs recorded episodes again with the factor values they ran with.

    ``terms`` holds ``TermCfg`` nodes (``recorder_cfg`` converts mappings) but is typed ``Any``
    for OmegaConf: it cannot assign a plain mapping to a new key of a ``dict[str, TermCfg]``,
    which is what ``'+recorder.terms.x={func: ...}'`` does. The shipped terms are typed by
    their YAML option (``recorder.terms.core.enabld`` fails while composing); a term added on
    the command line is checked at job start, its errors naming ``recorder.terms.x``.
    """

    terms: dict[str, Any] = field(default_factory=dict)
    fsync: bool = False
    resume: bool = False
    report: bool = False
    flush_every_s: float = 1.0
    writer: WriterKind = WriterKind.auto
    replay: ReplayCfg | None = None


def _convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked against the annotation ``tp`` (the kinds of field the configs use)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return _enum(tp, value, path)
    if tp is bool and not isinstance(value, bool):
        _fail(path, f"{value!r} is not a bool")
    if tp is float:
        if not is_number(value):
            _fail(path, f"{value!r} is not a number")
        return float(value)
    if tp is str and not isinstance(value, str):
        _fail(path, f"{value!r} is not a string")
    if origin is list:
        if not isinstance(value, list | tuple):
            _fail(path, f"{value!r} is not a list")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            _fail(path, f"{value!r} is not a mapping")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, path)
    return value


def from_mapping[T](cls: type[T], data: Any, path: str) -> T:
    """A config dataclass from itself or a mapping; unknown keys and values of the wrong type
    are errors naming ``path.key``."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        _fail(path, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            _fail(f"{path}.{key}", f"unknown key; {cls.__name__} has {', '.join(names)}")
    return cls(**{key: _convert(hints[key], value, f"{path}.{key}") for key, value in data.items()})


def sampler_cfg(spec: SamplerCfg | Mapping[str, Any], path: str = "sampler") -> SamplerCfg:
    """A validated per-type sampler config from a config or a mapping with a ``type`` key.

    >>> sampler_cfg({"type": "uniform", "low": 0.5, "high": 2.0})
    UniformCfg(low=0.5, high=2.0)
    """
    return from_mapping(SamplerCfg, spec, path).checked(path)


def variation_cfg(
    spec: VariationCfg | Mapping[str, Any], *, key: str | None = None, path: str | None = None
) -> VariationCfg:
    """A validated variation config; ``key`` is the default key (a ``variations`` mapping's
    key), ``path`` the config path errors name (default: the key)."""
    given = spec.key if isinstance(spec, VariationCfg) else None
    if isinstance(spec, Mapping):
        given = spec.get("key")
    name = given or key or ""
    where = path or name or "variation"
    cfg = from_mapping(VariationCfg, spec, where)
    if not isinstance(name, str) or not name:
        _fail(f"{where}.key", "a variation needs a non-empty key")
    if cfg.sampler is None:
        _fail(f"{where}.sampler", "a sampler is required")
    return VariationCfg(
        key=name,
        sampler=sampler_cfg(cfg.sampler, f"{where}.sampler"),
        scope=_enum(Scope, cfg.scope, f"{where}.scope"),
        enabled=_convert(bool, cfg.enabled, f"{where}.enabled"),
        apply=_convert(dict[str, Any] | None, cfg.apply, f"{where}.apply"),
    )


def variation_cfgs(specs: Mapping[str, Any] | Sequence[Any], path: str = "") -> list[VariationCfg]:
    """Validated configs of a ``variations`` node at config path ``path``: a mapping of key to
    spec (the key is the default variation key; dotted keys are keys like any other) or a list
    of specs. Errors name ``path.key`` or ``path[i]``."""
    if isinstance(specs, Mapping):
        return [
            variation_cfg(spec, key=str(key), path=f"{path}.{key}" if path else str(key))
            for key, spec in specs.items()
        ]
    if isinstance(specs, str) or not isinstance(specs, Sequence):
        _fail(path or "variations", f"must be a mapping or a list of variations, got {specs!r}")
    return [variation_cfg(spec, path=f"{path}[{i}]") for i, spec in enumerate(specs)]


def recorder_cfg(spec: RecorderCfg | Mapping[str, Any], path: str = "recorder") -> RecorderCfg:
    """A ``RecorderCfg`` (terms as ``TermCfg``) from itself or a mapping; errors name the key."""
    cfg = from_mapping(RecorderCfg, spec if isinstance(spec, Mapping) else vars(spec), path)
    terms = _convert(dict[str, TermCfg], cfg.terms, f"{path}.terms")
    return dataclasses.replace(cfg, terms=terms)


def unknown_keys(block: Mapping[str, Any], known: tuple[str, ...], path: str) -> None:
    """An adapter's ``apply`` block must hold only ``known`` keys."""
    for key in block:
        if key not in known:
            _fail(f"{path}.{key}", f"unknown key; expected some of {', '.join(known)}")
