"""Records: turn a batch of columns into JSON Lines without building a dict per record.

Each column is encoded once per batch (numbers through ``repr``, repeated strings through a
cache) and the lines are filled into one template. Non-finite floats become ``null``: JSON has
no NaN, and a bare ``NaN`` would make the whole line unreadable to strict parsers.

Example::

    lines = encode_lines({"env_id": np.array([0, 1]), "x": {"a": np.array([0.5, np.nan])}}, 2)
    # ['{"env_id": 0, "x": {"a": 0.5}}', '{"env_id": 1, "x": {"a": null}}']
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class EncodeError(ValueError):
    """A column that cannot be written as JSON; the message names it."""


def to_numpy(value: Any) -> Any:
    """Tensors to numpy (one transfer per column); other values unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _encode_floats(values: np.ndarray) -> list[str]:
    texts = list(map(repr, values.tolist()))
    if not np.isfinite(values).all():
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            texts[i] = "null"
    return texts


@functools.lru_cache(maxsize=4096, typed=True)
def _dumps_hashable(value: Any) -> str:
    """Repeated scalars (labels, names, ids, times of one batch) are encoded once."""
    return json.dumps(_finite(value), allow_nan=False)


def _encode_objects(values: list[Any], name: str) -> list[str]:
    out = []
    for value in values:
        try:
            if isinstance(value, list | tuple | dict):
                text = json.dumps(_finite(value), allow_nan=False)
            else:
                text = _dumps_hashable(value)
        except (TypeError, ValueError) as err:
            raise EncodeError(
                f"{name}: value {value!r} cannot be written as JSON ({err})"
            ) from None
        out.append(text)
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


class Encoded(list):
    """A column already encoded: ``n`` JSON texts."""


def encode_column(value: Any, n: int, name: str) -> Encoded:
    """``n`` JSON texts for a column: an array with ``n`` rows, a list of ``n``, or a scalar."""
    if isinstance(value, Encoded):
        return value
    return Encoded(_encode(to_numpy(value), n, name))


def encode_tree(columns: Mapping[str, Any], n: int, name: str) -> dict[str, Any]:
    """Encode every column of a (nested) mapping; errors name ``name`` and the column."""
    return {
        key: encode_tree(value, n, f"{name}.{key}")
        if isinstance(value, Mapping)
        else encode_column(value, n, f"{name}.{key}")
        for key, value in columns.items()
    }


def _encode(value: Any, n: int, name: str) -> list[str]:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.shape[0] != n:
            raise EncodeError(f"{name}: {value.shape[0]} values for {n} episodes")
        if value.ndim > 1:
            parts = [_encode(value[:, i], n, name) for i in range(value.shape[1])]
            return ["[" + ", ".join(row) + "]" for row in zip(*parts, strict=True)]
        kind = value.dtype.kind
        if kind == "b":
            return [("false", "true")[v] for v in value.tolist()]
        if kind in "iu":
            return list(map(str, value.tolist()))
        if kind == "f":
            return _encode_floats(value)
        return _encode_objects(value.tolist(), name)
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise EncodeError(f"{name}: {len(value)} values for {n} episodes")
        return _encode_objects(list(value), name)
    if isinstance(value, np.ndarray | np.generic):
        value = value.item()
    return _encode_objects([value], name) * n


def _add_columns(
    mapping: Mapping[str, Any],
    prefix: str,
    n: int,
    template_parts: list[str],
    encoded: list[list[str]],
) -> None:
    # A module-level function, not a recursive closure: a closure that refers to itself is a
    # reference cycle, which would keep every batch's encoded columns alive until a full GC.
    for i, (key, value) in enumerate(mapping.items()):
        head = ("" if i == 0 else ", ") + json.dumps(key).replace("%", "%%") + ": "
        if isinstance(value, Mapping):
            template_parts.append(head + "{")
            _add_columns(value, f"{prefix}{key}.", n, template_parts, encoded)
            template_parts.append("}")
        else:
            template_parts.append(head + "%s")
            encoded.append(encode_column(value, n, f"{prefix}{key}"))


def encode_lines(columns: Mapping[str, Any], n: int) -> list[str]:
    """One JSON object per row; nested mappings become nested objects."""
    template_parts: list[str] = []
    encoded: list[list[str]] = []
    _add_columns(columns, "", n, template_parts, encoded)
    template = "{" + "".join(template_parts) + "}"
    return [template % row for row in zip(*encoded, strict=True)] if encoded else [template] * n
