"""Factor columns: what each factor a manifest declares becomes in the episode frame.

A factor schema (``arena_recording.core.format.FactorSchema``) gives one column per vector
component: ``variations.<key>`` for a scalar, ``variations.<key>[i]`` (``[i,j]``...) for the
components of a vector. Kind, bounds and choices are read from the schema as the sampler
described them, never guessed from values. The jobs of a sweep may declare a factor
differently (a swept bound): their declarations are pooled.

Example::

    factors, problems = factors_from_manifests([read_manifest(Path("run/manifest.json"))])
    print([(f.column, f.low, f.high, f.bounds) for f in factors])
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from arena_recording.core.format import FactorSchema, Manifest

PREFIX = "variations."


@dataclass(frozen=True)
class Factor:
    """One factor column with the type and bounds its manifest declares.

    ``low``/``high`` are the sampler's bounds of this component; ``bounds`` says whether they
    are ``hard`` (no value lies beyond) or ``soft`` (values may, as of an untruncated normal),
    which ``note`` then says. ``choices`` are the categories of a categorical or boolean factor.
    """

    column: str
    key: str
    kind: str
    distribution: str
    scope: str
    low: float | None = None
    high: float | None = None
    bounds: str | None = None
    choices: tuple[Any, ...] = ()
    note: str = ""

    @property
    def categorical(self) -> bool:
        return self.kind in ("categorical", "boolean")

    @property
    def hard(self) -> bool:
        """Whether every value must lie within ``[low, high]``."""
        return self.bounds == "hard"

    @property
    def excluded(self) -> str | None:
        """Why a sensitivity analysis cannot use this factor, or ``None``."""
        if self.scope == "interval":
            return "is drawn several times per episode (interval scope)"
        if self.categorical:
            return None if len(self.choices) > 1 else "has a single choice"
        if self.low is None or self.high is None:
            return "has no bounds in the manifest"
        if self.low == self.high:
            return "is constant"
        return None


def hashable(value: Any) -> Any:
    """Choices that are lists or mappings become their JSON text, so they can be categories."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _soft_note(low: float, high: float, distribution: str) -> str:
    return (
        f"soft bounds [{low:.4g}, {high:.4g}] as the {distribution} sampler describes them: "
        "values may lie beyond"
    )


def factor_columns(schema: FactorSchema) -> list[Factor]:
    """The factor columns of one factor schema (one per vector component)."""
    common = {
        "key": schema.key,
        "kind": schema.kind,
        "distribution": schema.distribution,
        "scope": schema.scope,
    }
    column = f"{PREFIX}{schema.key}"
    if schema.categorical:
        return [Factor(column, choices=tuple(map(hashable, schema.choices or ())), **common)]
    factors = []
    for flat, index in enumerate(np.ndindex(*schema.shape)):
        name = f"{column}[{','.join(map(str, index))}]" if schema.shape else column
        low = None if schema.low is None else schema.low[flat]
        high = None if schema.high is None else schema.high[flat]
        soft = schema.bounds == "soft" and low is not None and high is not None
        note = _soft_note(low, high, schema.distribution) if soft else ""
        factors.append(Factor(name, low=low, high=high, bounds=schema.bounds, note=note, **common))
    return factors


def _merge_factor(versions: list[Factor]) -> tuple[Factor, str | None]:
    """One factor from the jobs of a sweep: choices and bounds are pooled, which ``note`` says
    for bounds; a second value is a warning (kinds that differ)."""
    first = versions[0]
    if all(v == first for v in versions):
        return first, None
    kinds = sorted({v.kind for v in versions})
    if len(kinds) > 1:
        return first, f"{first.column}: kinds differ between jobs {kinds}; read as {first.kind}"
    if first.categorical:
        choices = tuple(dict.fromkeys(itertools.chain.from_iterable(v.choices for v in versions)))
        return replace(first, choices=choices), None
    lows = [v.low for v in versions if v.low is not None]
    highs = [v.high for v in versions if v.high is not None]
    low, high = (min(lows), max(highs)) if lows and highs else (None, None)
    distributions = sorted({v.distribution for v in versions})
    notes = [v.note for v in versions if v.note]
    notes.append(
        f"bounds differ between jobs ({', '.join(distributions)}); pooled: [{low}, {high}]"
    )
    merged = replace(
        first,
        low=low,
        high=high,
        bounds="hard" if all(v.hard for v in versions) else "soft",
        distribution=distributions[0] if len(distributions) == 1 else "mixed",
        note="; ".join(dict.fromkeys(notes)),
    )
    return merged, None


def factors_from_manifests(manifests: Sequence[Manifest]) -> tuple[list[Factor], list[str]]:
    """Every enabled factor of the manifests (in declaration order) and merge warnings."""
    versions: dict[str, list[Factor]] = {}
    for manifest in manifests:
        for schema in manifest.factors:
            if schema.enabled:
                for factor in factor_columns(schema):
                    versions.setdefault(factor.column, []).append(factor)
    factors, problems = [], []
    for column_versions in versions.values():
        factor, problem = _merge_factor(column_versions)
        factors.append(factor)
        if problem:
            problems.append(problem)
    return factors, problems
