"""Records: turn a batch of columns into JSON Lines without building a dict per record.

Each column is encoded once per batch: a numeric column is serialized as one JSON array and
split into its elements, each distinct string is serialized once, values shared by every line
go into the line template, and each line is one ``template % row`` (in C). orjson serializes
when it is installed, else the standard library's ``json`` (slower: see
``benchmarks/bench_encoder.md``); both write the same JSON values. Non-finite floats become
``null``: JSON has no NaN, and a bare ``NaN`` would make the whole line unreadable to strict
parsers.

Example::

    block = encode_lines({"env_id": np.array([0, 1]), "x": {"a": np.array([0.5, np.nan])}}, 2)
    # b'{"env_id":0,"x":{"a":0.5}}\\n{"env_id":1,"x":{"a":null}}\\n'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

try:
    import orjson
except ImportError:  # optional: the standard library encodes the same values, slower
    orjson = None


class EncodeError(ValueError):
    """A column that cannot be written as JSON; the message names it."""


def to_numpy(value: Any) -> Any:
    """Tensors to numpy (one transfer per column); other values unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


_NON_FINITE = {b"NaN": b"null", b"Infinity": b"null", b"-Infinity": b"null"}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _json_dumps(value: Any) -> bytes:
    return json.dumps(_finite(value), allow_nan=False, separators=(",", ":")).encode()


if orjson is not None:
    _OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def dumps(value: Any) -> bytes:
        """One JSON value (non-finite floats as null)."""
        return orjson.dumps(value, option=_OPTIONS)

    def _split(array: bytes) -> list[bytes]:
        return array[1:-1].split(b",")
else:
    dumps = _json_dumps

    def _split(array: bytes) -> list[bytes]:
        return [_NON_FINITE.get(t, t) for t in array[1:-1].split(b",")]


def _numbers(values: list[Any]) -> list[bytes]:
    """The elements of a flat list of numbers or booleans, each as JSON."""
    if not values:
        return []
    if orjson is not None:
        return _split(orjson.dumps(values))
    return _split(json.dumps(values, separators=(",", ":")).encode())


def _objects(values: list[Any], name: str) -> list[bytes]:
    if set(map(type, values)) <= _TEXT:  # labels, names, times: each distinct one dumped once
        texts = {value: dumps(value) for value in set(values)}
        return list(map(texts.__getitem__, values))
    cache: dict[Any, bytes] = {}
    out = []
    for value in values:
        try:
            if isinstance(value, str | int | float | bool | None):
                text = cache.get((type(value), value))
                if text is None:
                    text = cache[(type(value), value)] = dumps(value)
            else:
                text = dumps(value)
        except (TypeError, ValueError) as err:
            raise EncodeError(
                f"{name}: value {value!r} cannot be written as JSON ({err})"
            ) from None
        out.append(text)
    return out


_TEXT = {str, type(None)}


class Encoded(list):
    """A column already encoded: ``n`` JSON texts (bytes)."""


def encode_column(value: Any, n: int, name: str) -> Encoded:
    """``n`` JSON texts for a column: an array with ``n`` rows, a list of ``n``, or a scalar."""
    if isinstance(value, Encoded):
        return value
    return Encoded(_encode(to_numpy(value), n, name))


def _encode(value: Any, n: int, name: str) -> list[bytes]:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.shape[0] != n:
            raise EncodeError(f"{name}: {value.shape[0]} values for {n} episodes")
        if value.dtype.kind not in "biuf":
            return _objects(value.tolist(), name)
        if value.ndim == 1:
            return _numbers(value.tolist())
        if value.ndim == 2 and value.shape[1] > 0:
            width = value.shape[1]
            flat = _numbers(value.reshape(-1).tolist())
            return [
                b"[" + b",".join(flat[i : i + width]) + b"]" for i in range(0, len(flat), width)
            ]
        return _objects(value.tolist(), name)
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise EncodeError(f"{name}: {len(value)} values for {n} episodes")
        return _objects(list(value), name)
    if isinstance(value, np.ndarray | np.generic):
        value = value.item()
    return _objects([value], name) * n


def _is_scalar(value: Any) -> bool:
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.ndim == 0
    return not isinstance(value, list | tuple)


def _matrix(value: Any, n: int) -> np.ndarray | None:
    """``value`` as a numeric ``(n, width)`` array, if it is one: its rows are JSON arrays whose
    brackets and commas go into the line template instead of being joined per row."""
    if isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 2:
        array = to_numpy(value)
        if array.shape[0] == n and array.shape[1] > 0 and array.dtype.kind in "biuf":
            return array
    return None


def _template(
    mapping: Mapping[str, Any], prefix: str, n: int, parts: list[bytes], columns: list[list[bytes]]
) -> None:
    """Fill ``parts`` (the text between columns) and ``columns`` (the encoded columns)."""
    text = b"{"
    for i, (key, value) in enumerate(mapping.items()):
        text += (b"," if i else b"") + dumps(key) + b":"
        if isinstance(value, Mapping):
            parts[-1] += text
            _template(value, f"{prefix}{key}.", n, parts, columns)
            text = b""
        elif _is_scalar(value):  # the same in every line: part of the template
            parts[-1] += text + encode_column(value, 1, f"{prefix}{key}")[0]
            text = b""
        elif (matrix := _matrix(value, n)) is not None:  # one column per component
            width = matrix.shape[1]
            flat = _numbers(matrix.reshape(-1).tolist())
            parts[-1] += text + b"["
            for j in range(width):
                columns.append(flat[j::width])
                parts.append(b"," if j < width - 1 else b"]")
            text = b""
        else:
            parts[-1] += text
            columns.append(encode_column(value, n, f"{prefix}{key}"))
            parts.append(b"")
            text = b""
    parts[-1] += text + b"}"


def encode_lines(columns: Mapping[str, Any], n: int) -> bytes:
    """``n`` JSON objects, one per line (each ending in a newline); nested mappings nest."""
    parts: list[bytes] = [b""]
    encoded: list[list[bytes]] = []
    _template(columns, "", n, parts, encoded)
    parts[-1] += b"\n"
    if not encoded:
        return _escape_separators(parts[0] * n)
    template = b"%b".join(part.replace(b"%", b"%%") for part in parts)
    return _escape_separators(b"".join(map(template.__mod__, zip(*encoded, strict=True))))


# Characters that ``str.splitlines`` (and JavaScript) take for line breaks: escaped, so a line
# is one line to every reader. Their UTF-8 bytes occur nowhere else (only inside strings).
_SEPARATORS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _escape_separators(block: bytes) -> bytes:
    if block.isascii():  # one fast pass: the usual block (numbers, ASCII names) has none
        return block
    for raw, escaped in _SEPARATORS:
        if raw in block:
            block = block.replace(raw, escaped)
    return block
