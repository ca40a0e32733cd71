"""Catalog: the variations and recorder terms a Hydra app exposes, with their override paths.

Composes the app's config the way Hydra would (with our search-path plugin, so the ``recorder``
group is there) and lists what can be changed from the command line: every variation under a
``variations`` key with its sampler fields, every term of every ``recorder`` option, and the
recorder settings. An app is named ``module:config_name`` (the module is imported so that its
ConfigStore entries exist); a YAML app is named by its config dir and config name::

    arena-recording catalog arena_recording.evaluate:evaluate
    arena-recording catalog eval --config-dir tests/hydra_apps/conf
    arena-recording catalog arena_recording.evaluate:evaluate variations.speed.sampler.high=6

or, from Python::

    print(catalog("arena_recording.evaluate:evaluate").to_text())
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from arena_recording.core.config import SAMPLERS, SamplerType
from arena_recording.integrations.hydra_callback import variation_nodes

GROUP = "recorder"
DEFAULT = "default"  # the option that selects core and variations


@dataclass
class Setting:
    """Something to override: its config key, current value, and the override that sets it
    (``+`` when the key is not in the config yet)."""

    key: str
    value: Any
    present: bool = True

    @property
    def override(self) -> str:
        return f"{'' if self.present else '+'}{self.key}={override_value(self.value)}"


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar writes it (a string quoted unless it is plain).

    >>> override_value(["a b", 1, None])
    "['a b',1,null]"
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(override_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and not re.fullmatch(r"[\w./:@+-]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


@dataclass
class Entry:
    """A variation or a term: where it lives, what it is, and its settings."""

    key: str
    description: str
    settings: list[Setting]
    source: str = ""


@dataclass
class Catalog:
    """What an app exposes: variations, recorder terms (by option) and recorder settings."""

    app: str
    variations: list[Entry]
    terms: list[Entry]
    options: list[str]
    recorder: list[Setting]

    def to_dict(self) -> dict[str, Any]:
        def entry(e: Entry) -> dict[str, Any]:
            return {
                "key": e.key,
                "description": e.description,
                "source": e.source,
                "overrides": [s.override for s in e.settings],
            }

        return {
            "app": self.app,
            "variations": [entry(e) for e in self.variations],
            "recorder_options": self.options,
            "terms": [entry(e) for e in self.terms],
            "recorder_settings": [s.override for s in self.recorder],
        }

    def to_text(self) -> str:
        lines = [f"{self.app}", "", f"variations ({len(self.variations)}):"]
        for e in self.variations:
            lines.append(f"  {e.key}  {e.description}")
            lines.extend(f"      {s.override}" for s in e.settings)
        lines.append(
            "  replace a sampler: '~<key>.sampler' '+<key>.sampler={type: normal, mean: 1.0, std: 0.1}' "
            f"(types: {', '.join(SamplerType.__members__)})"
        )
        picks = ",".join(self.options)
        lines += [
            "",
            f"recorder terms (switch on with +{GROUP}={DEFAULT} or '+{GROUP}=[{picks}]'):",
        ]
        for e in self.terms:
            lines.append(f"  {e.key}  {e.description}  ({e.source})")
            lines.extend(f"      {s.override}" for s in e.settings)
        lines.append("  add a term: '+recorder.terms.NAME={func: pkg.module:function, params: {}}'")
        lines += ["", "recorder settings:"]
        lines.extend(f"  {s.override}" for s in self.recorder)
        return "\n".join(lines)


@contextlib.contextmanager
def _hydra(config_dir: str | os.PathLike[str] | None) -> Iterator[None]:
    GlobalHydra.instance().clear()
    if config_dir is None:
        context = initialize(version_base=None, config_path=None)
    else:
        context = initialize_config_dir(str(Path(config_dir).absolute()), version_base=None)
    with context:
        yield


def _with_recorder(config_name: str, overrides: Sequence[str], options: str) -> DictConfig:
    """The app config with recorder options selected (``+`` unless the app has the group)."""
    if any(o.lstrip("+~").split("=")[0] == GROUP for o in overrides):
        return compose(config_name, overrides=list(overrides))
    try:
        return compose(config_name, overrides=[*overrides, f"+{GROUP}={options}"])
    except Exception:  # the app's defaults list already selects a recorder option
        return compose(config_name, overrides=[*overrides, f"{GROUP}={options}"])


def _sampler_settings(where: str, sampler: Any) -> tuple[str, list[Setting]]:
    """A sampler's description and its type's fields (``+`` where the config lacks one)."""
    if not isinstance(sampler, dict):
        return f"sampler {sampler!r}", []
    kind = sampler.get("type")
    fields = SAMPLERS[SamplerType(kind)].defaults() if kind in SamplerType.__members__ else {}
    # the type itself is left out: changing it alone would keep the old type's fields
    fields |= {k: None for k, v in sampler.items() if k not in fields and k != "type" and v}
    settings = [
        Setting(f"{where}.sampler.{name}", sampler.get(name, default), name in sampler)
        for name, default in fields.items()
    ]
    bounds = " ".join(f"{k}={sampler[k]}" for k in fields if sampler.get(k) is not None)
    return f"{kind} {bounds}".strip(), settings


def _variations(cfg: DictConfig) -> list[Entry]:
    entries = []
    for path, specs in variation_nodes(cfg):
        items = specs.items() if isinstance(specs, dict) else enumerate(specs)
        for name, spec in items:
            where = f"{path}[{name}]" if isinstance(specs, list) else f"{path}.{name}"
            if not isinstance(spec, dict):
                continue
            description, settings = _sampler_settings(where, spec.get("sampler"))
            rest = {k: v for k, v in spec.items() if k != "sampler" and (k != "key" or v)}
            settings += [Setting(f"{where}.{k}", v) for k, v in rest.items()]
            entries.append(Entry(where, description, settings))
    return entries


def _terms(cfg: DictConfig, source: dict[str, str]) -> list[Entry]:
    terms = OmegaConf.to_container(cfg[GROUP].terms, resolve=True)
    entries = []
    for name, term in terms.items():
        where = f"{GROUP}.terms.{name}"
        settings = [Setting(f"{where}.enabled", term.get("enabled", True))]
        settings += [Setting(f"{where}.params.{k}", v) for k, v in term.get("params", {}).items()]
        origin = f"+{GROUP}={source[name]}" if name in source else "the app's config"
        entries.append(Entry(where, str(term.get("func")), settings, origin))
    return entries


def catalog(
    app: str,
    config_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> Catalog:
    """Compose ``app`` (``module:config_name``, or a config name with ``config_dir``) with
    ``overrides`` and list its variations, recorder terms and settings."""
    module, _, config_name = app.rpartition(":")
    if module:
        importlib.import_module(module)
    with _hydra(config_dir):
        # a term's source is the option that adds it alone (default and replay add several)
        options, source = [], {}
        for option in GlobalHydra.instance().config_loader().get_group_options(GROUP):
            terms = list(_with_recorder(config_name, overrides, option)[GROUP].terms)
            if len(terms) == 1:
                options.append(option)
                source[str(terms[0])] = option
        cfg = _with_recorder(config_name, overrides, f"[{','.join(options)}]")
    recorder = OmegaConf.to_container(cfg[GROUP], resolve=True)
    settings = [Setting(f"{GROUP}.{k}", v) for k, v in recorder.items() if k != "terms"]
    return Catalog(app, _variations(cfg), _terms(cfg, source), list(options), settings)
