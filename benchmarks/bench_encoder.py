"""Benchmark of the JSON Lines encoder against the floor: orjson serializing the record dicts.

One batch of records like the recorder writes (identity, ``core``, 5 variation factors, one
custom float), as columns. Timed, in interleaved rounds (CPU time of this thread, so other load
on the machine does not count; medians):

- *encoder, orjson*: ``encode_lines(columns, n)``, what the recorder runs, with orjson;
- *encoder, json*: the same with the standard library (orjson not installed);
- *orjson per dict (floor)*: ``orjson.dumps`` of each ready-made record dict, joined by newlines;
- *json per dict*: ``json.dumps`` of each record dict;
- *columns to dicts*: building those dicts from the columns, which a dict-based encoder would
  have to do first (not included in the two rows above).

Every encoder's lines parse to the same records (checked before timing). Run it::

    .venv/bin/python benchmarks/bench_encoder.py      # writes bench_encoder.md beside this file
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from arena_recording.core import encoding


def columns(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    starts = 1.8e9 + np.sort(rng.integers(0, 100, n)) * 0.001
    iso = [datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds") for t in starts]
    return {
        "schema_version": 2,
        "run_id": "0123456789abcdef0123456789abcdef",
        "rank": 0,
        "seq": np.arange(n),
        "episode_id": rng.permutation(n) + 10_000,
        "env_id": rng.integers(0, 4096, n),
        "episode_in_env": rng.integers(0, 50, n),
        "status": np.array(["terminated", "truncated"], dtype=object)[rng.integers(0, 2, n)],
        "success": rng.random(n) < 0.5,
        "terminated": rng.random(n) < 0.5,
        "truncated": rng.random(n) < 0.5,
        "termination": np.array(["object_dropped", "time_out", None], dtype=object)[
            rng.integers(0, 3, n)
        ],
        "length": rng.integers(50, 151, n),
        "start_time": iso,
        "end_time": iso[::-1],
        "seed": 1234,
        "variations": {
            "object.mass": rng.uniform(0.5, 2.0, n).astype(np.float32),
            "object.initial_pos": rng.uniform(-0.1, 0.1, (n, 3)).astype(np.float32),
            "table.friction": rng.normal(0.6, 0.15, n).astype(np.float32),
            "scene.texture": np.array(["wood", "metal", "plastic"], dtype=object)[
                rng.integers(0, 3, n)
            ],
            "light.enabled": np.ones(n, dtype=bool),
        },
        "object_height_cm": np.where(rng.random(n) < 0.01, np.nan, rng.random(n) * 10),
    }


def to_dicts(cols: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The record dicts of the columns (what a dict-based encoder serializes)."""

    def rows(value: Any) -> list[Any]:
        if isinstance(value, np.ndarray):
            return value.tolist()
        return value if isinstance(value, list) else [value] * n

    flat = {k: rows(v) for k, v in cols.items() if not isinstance(v, dict)}
    nested = {
        k: {kk: rows(vv) for kk, vv in v.items()} for k, v in cols.items() if isinstance(v, dict)
    }
    out = []
    for i in range(n):
        record = {}
        for key in cols:
            if key in nested:
                record[key] = {kk: vv[i] for kk, vv in nested[key].items()}
            else:
                record[key] = flat[key][i]
        out.append(record)
    return out


def json_lines(records: list[dict[str, Any]]) -> bytes:
    texts = [json.dumps(encoding._finite(r), allow_nan=False) for r in records]
    return ("\n".join(texts) + "\n").encode()


def orjson_lines(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(map(orjson.dumps, records)) + b"\n"


def fallback_encoder() -> Callable[[dict[str, Any], int], bytes]:
    """``encode_lines`` of a copy of the module imported without orjson."""
    saved = sys.modules.get("orjson")
    sys.modules["orjson"] = None  # type: ignore[assignment]
    try:
        spec = importlib.util.find_spec("arena_recording.core.encoding")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules["orjson"] = saved
    assert module.orjson is None
    return module.encode_lines


def cpu_time(func: Callable[[], Any]) -> float:
    t0 = time.thread_time()
    func()
    return time.thread_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_encoder.md"))
    args = parser.parse_args()
    n = args.records
    cols = columns(n)
    records = to_dicts(cols, n)
    fallback = fallback_encoder()
    cases: dict[str, Callable[[], bytes]] = {
        "encoder, orjson": lambda: encoding.encode_lines(cols, n),
        "encoder, json (no orjson)": lambda: fallback(cols, n),
        "orjson per dict (floor)": lambda: orjson_lines(records),
        "json per dict": lambda: json_lines(records),
        "columns to dicts": lambda: to_dicts(cols, n),
    }
    expected = [json.loads(line) for line in json_lines(records).splitlines()]
    for name, case in cases.items():
        if name != "columns to dicts":
            assert [json.loads(line) for line in case().splitlines()] == expected, name
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        names = list(cases)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(cpu_time(cases[name]) / n)
    floor = statistics.median(times["orjson per dict (floor)"])
    lines = [
        "| encoder | µs per record | vs orjson per dict |",
        "|---|---:|---:|",
    ]
    for name, t in times.items():
        median = statistics.median(t)
        lines.append(f"| {name} | {median * 1e6:.2f} | {median / floor:.2f}x |")
    text = (
        "# Line encoder against orjson\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, numpy {np.__version__}, orjson {orjson.__version__}."
        f" {n:,} records (identity, core, 5 factors, one custom float; 1% NaN), "
        f"{args.rounds} interleaved rounds, CPU time of the encoding thread, medians.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
