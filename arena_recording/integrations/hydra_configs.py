"""Structured configs for Hydra: typed schemas for the recorder, its terms, variations, samplers.

They mirror the core config dataclasses (``RecorderCfg``, ``TermCfg``, ``VariationCfg`` and the
sampler configs) in a form OmegaConf can type-check: command-line overrides such as
``recorder.fsync=maybe`` or a misspelled term key fail while Hydra composes the config. This
module imports only omegaconf and hydra (no torch), because the search-path plugin imports it in
every Hydra process. ``register_configs`` is idempotent: plugin modules are re-imported on every
plugin scan, launcher workers included.

Config store entries (``+recorder=core`` needs none of them directly):

- ``arena_recording/schema``: ``recorder``, ``term``, ``variation`` (our YAML options extend
  ``recorder``; an app can extend any of them from its defaults list);
- ``arena_recording/sampler``: ``uniform``, ``log_uniform``, ``normal``, ``choice``,
  ``bernoulli``, ``constant``.

An app whose primary config is a dataclass rejects new top-level keys, so it declares the field
(``None`` records nothing; ``+recorder=core`` fills it)::

    from dataclasses import dataclass
    from typing import Optional

    from arena_recording.integrations.hydra_configs import RecorderConf

    @dataclass
    class EvalConf:
        seed: int = 0
        recorder: Optional[RecorderConf] = None

Variations in a dataclass config use ``VariationConf`` and a sampler conf::

    variations: dict[str, VariationConf] = field(default_factory=lambda: {
        "gravity": VariationConf(sampler=UniformConf(low=8.0, high=12.0))})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA_GROUP = "arena_recording/schema"
SAMPLER_GROUP = "arena_recording/sampler"


@dataclass
class TermConf:
    """A recorder term: ``func`` is an import path (``pkg.module:function``)."""

    func: str = MISSING
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


@dataclass
class RecorderConf:
    """The ``recorder`` node. A job records when this node is present and not ``None``.

    ``terms`` maps a term name to a ``TermConf``-shaped mapping. It is not typed as
    ``dict[str, TermConf]`` because OmegaConf then rejects the plain mapping that
    ``'+recorder.terms.x={func: ..., params: {...}}'`` assigns; the callback checks every term
    against ``TermConf`` at job start instead.
    """

    terms: dict[str, Any] = field(default_factory=dict)
    fsync: bool = False
    resume: bool = False
    report: bool = False


@dataclass
class UniformConf:
    """Uniform on ``[low, high]``; scalars or equal-length lists."""

    type: str = "uniform"
    low: Any = 0.0
    high: Any = 1.0


@dataclass
class LogUniformConf:
    """Log-uniform on ``[low, high]``, ``0 < low``."""

    type: str = "log_uniform"
    low: Any = 0.1
    high: Any = 10.0


@dataclass
class NormalConf:
    """Normal(mean, std), truncated to ``[low, high]`` when a bound is given."""

    type: str = "normal"
    mean: Any = 0.0
    std: Any = 1.0
    low: Any = None
    high: Any = None


@dataclass
class ChoiceConf:
    """One of ``choices``, optionally weighted."""

    type: str = "choice"
    choices: Any = MISSING
    weights: Any = None


@dataclass
class BernoulliConf:
    """True with probability ``p``."""

    type: str = "bernoulli"
    p: float = 0.5


@dataclass
class ConstantConf:
    """Always ``value``."""

    type: str = "constant"
    value: Any = 0.0


SAMPLER_CONFS: dict[str, type] = {
    cls.type: cls
    for cls in (UniformConf, LogUniformConf, NormalConf, ChoiceConf, BernoulliConf, ConstantConf)
}


@dataclass
class VariationConf:
    """A named factor. ``key`` defaults to the variation's key in its ``variations`` mapping."""

    key: str = ""
    sampler: Any = MISSING
    scope: str = "episode"
    enabled: bool = True


def register_configs(store: ConfigStore | None = None) -> None:
    """Store the schemas in Hydra's config store unless they are there already."""
    cs = store or ConfigStore.instance()
    groups = cs.repo.get("arena_recording", {})
    if "schema" in groups and "sampler" in groups:
        return
    cs.store(group=SCHEMA_GROUP, name="recorder", node=RecorderConf, provider="arena-recording")
    cs.store(group=SCHEMA_GROUP, name="term", node=TermConf, provider="arena-recording")
    cs.store(group=SCHEMA_GROUP, name="variation", node=VariationConf, provider="arena-recording")
    for name, conf in SAMPLER_CONFS.items():
        cs.store(group=SAMPLER_GROUP, name=name, node=conf, provider="arena-recording")
