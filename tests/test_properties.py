"""Property-based checks (hypothesis): whatever a sampler config or a term returns, it is
recorded faithfully or refused with an error that names its key; never a silently wrong row.

Sampler configs cover every type with finite, non-finite, vector, string and mixed values and
unknown keys. Term outputs cover NaN and infinities (written as null), huge ints, numpy and
torch scalars and arrays, nested mappings, unicode and newlines in strings, and columns of the
wrong length.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np
import pytest
import torch
from conftest import CORE_AND_VARIATIONS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_recorder import SEED, Adapter

from arena_recording.core.format import read_records
from arena_recording.core.session import Session, active_session
from arena_recording.core.variations import build_variations
from arena_recording.errors import ConfigError

NUM_ENVS = 3
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# sampler configs ------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.integers(-(10**6), 10**6),
)
bound = st.one_of(numbers, st.lists(numbers, min_size=1, max_size=3), st.text(max_size=3))
choice = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-100, 100),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
samplers = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["uniform", "log_uniform"])}, optional={"low": bound, "high": bound}),
    st.fixed_dictionaries({"type": st.just("normal")}, optional={"mean": bound, "std": bound, "low": bound, "high": bound}),
    st.fixed_dictionaries({"type": st.just("choice")}, optional={"choices": st.lists(choice, max_size=4), "weights": st.lists(numbers, max_size=4)}),
    st.fixed_dictionaries({"type": st.just("bernoulli")}, optional={"p": numbers}),
    st.fixed_dictionaries({"type": st.just("constant")}, optional={"value": bound}),
    st.fixed_dictionaries({"type": st.sampled_from(["gaussian", "uniform"]), "spread": numbers}),
)  # fmt: skip


def record_variation(spec: dict[str, Any], scope: str) -> tuple[list[dict], Any]:
    """Record 2 episodes of each env with the variation ``v``; the records and the variation."""
    with tempfile.TemporaryDirectory() as out, Session(CORE_AND_VARIATIONS, out) as session:
        (variation,) = build_variations({"v": {"sampler": spec, "scope": scope}}, "variations")
        adapter = Adapter(session, [variation], num_envs=NUM_ENVS)
        for _ in range(3):
            adapter.reset(range(NUM_ENVS))
            adapter.step()
        session.finish()
        return read_records(session.records_path)[0], variation


@SETTINGS
@given(spec=samplers, scope=st.sampled_from(["episode", "build"]))
def test_a_sampler_config_is_recorded_faithfully_or_refused_naming_its_key(spec, scope):
    try:
        records, variation = record_variation(spec, scope)
    except ConfigError as err:
        assert err.key.startswith("variations.v"), err
        assert active_session() is None
        return
    assert len(records) == 2 * NUM_ENVS
    env = torch.tensor([r["env_id"] for r in records])
    episode = torch.tensor([r["episode_in_env"] for r in records])
    drawn = variation.sample(env, seed=SEED, episode_in_env=episode)
    labels = variation.labels
    expected = drawn.tolist() if labels is None else [labels[i] for i in drawn.tolist()]
    got = [r["variations"]["v"] for r in records]
    assert got == _json_floats(expected), (spec, got, expected)
    if labels is not None:
        assert all(g in labels for g in got)  # each choice exactly as configured
    schema = variation.schema()
    if schema.get("low") is not None and schema.get("bounds") == "hard":
        low, high = np.asarray(schema["low"]), np.asarray(schema["high"])
        values = np.asarray(got, dtype=float).reshape(len(got), -1)
        tol = 1e-6 * np.maximum(1.0, np.maximum(abs(low), abs(high)))
        assert ((values >= low - tol) & (values <= high + tol)).all(), (spec, got)


def _json_floats(values: Any) -> Any:
    """What JSON keeps of ``values``: non-finite floats become null."""
    if isinstance(values, list):
        return [_json_floats(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        return None
    return values


# term outputs ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(),  # unicode, newlines, quotes, percent signs
    st.floats(width=32).map(np.float32),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.floats(allow_nan=True, width=32).map(lambda x: torch.tensor(x)),
)
row_values = st.one_of(
    scalars.filter(lambda v: not isinstance(v, torch.Tensor)),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=3),
)
columns = st.one_of(
    scalars,
    st.lists(row_values, min_size=NUM_ENVS, max_size=NUM_ENVS),
    st.lists(row_values, min_size=0, max_size=6),  # often the wrong length
    st.lists(st.floats(allow_nan=True), min_size=NUM_ENVS, max_size=NUM_ENVS).map(np.array),
    st.lists(st.floats(width=32), min_size=NUM_ENVS, max_size=NUM_ENVS).map(
        lambda v: torch.tensor(v, dtype=torch.float32)
    ),
    st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=6).map(np.array),
)
outputs = st.one_of(
    columns,
    st.dictionaries(st.text(min_size=1, max_size=4), columns, min_size=1, max_size=3),
    st.fixed_dictionaries({"outer": st.fixed_dictionaries({"inner": columns})}),
)


def expected_row(value: Any, row: int) -> tuple[Any, bool]:
    """The value row ``row`` must hold for a column ``value``, and whether it went through
    float32 (compared at float32 precision)."""
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray) and value.ndim or isinstance(value, list):
        value = value[row]
    single = isinstance(value, np.float32) or (
        isinstance(value, np.ndarray) and value.dtype == np.float32
    )
    if isinstance(value, np.generic | np.ndarray):
        value = value.item()
    return _json_floats(value), single


def same(got: Any, want: Any, single: bool) -> bool:
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return got == want or (single and np.float32(got) == np.float32(want))
    return got == want and type(got) is type(want)


def flat(out: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if not isinstance(out, dict):
        return {prefix: out}
    found = {}
    for key, value in out.items():
        found.update(flat(value, (*prefix, key)))
    return found


@SETTINGS
@given(output=outputs)
def test_a_term_output_is_recorded_faithfully_or_refused_naming_its_key(output):
    def term(batch):
        return output

    cfg = {"terms": {**CORE_AND_VARIATIONS["terms"], "x": {"func": term}}, "flush_every_s": 0.0}
    try:
        with tempfile.TemporaryDirectory() as out, Session(cfg, out) as session:
            adapter = Adapter(session, [], num_envs=NUM_ENVS)
            adapter.reset(range(NUM_ENVS))
            adapter.step()
            adapter.reset(range(NUM_ENVS))
            session.finish()
            records = read_records(session.records_path)[0]
    except (ValueError, TypeError) as err:
        assert "recorder term 'x'" in str(err), err
        assert active_session() is None
        return
    columns = flat(output) if isinstance(output, dict) else {("x",): output}
    for path, value in columns.items():
        for row, record in enumerate(sorted(records, key=lambda r: r["env_id"])):
            got = record
            for key in path:
                got = got[key]
            want, single = expected_row(value, row)
            assert same(got, want, single), (path, value, row, got, want)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_written_as_null(value):
    cfg = {"terms": {"x": {"func": lambda batch: [value] * len(batch)}}, "flush_every_s": 0.0}
    with tempfile.TemporaryDirectory() as out, Session(cfg, out) as session:
        adapter = Adapter(session, [], num_envs=NUM_ENVS)
        adapter.reset(range(NUM_ENVS))
        adapter.step()
        adapter.reset(range(NUM_ENVS))
        session.finish()
        text = session.records_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert [r["x"] for r in map(__import__("json").loads, text.splitlines())] == [None] * NUM_ENVS


def test_a_finite_value_beyond_float32_is_refused_naming_its_key():
    """Draws may be float32 (Isaac Lab, GPU): 1e39 would be recorded as an overflow (null)."""
    spec = {"v": {"sampler": {"type": "uniform", "low": 0.0, "high": 1e39}}}
    with pytest.raises(ConfigError, match="beyond float32's range") as err:
        build_variations(spec, "variations")
    assert err.value.key == "variations.v.sampler.high"
