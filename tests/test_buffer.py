"""The recorder's device-side buffer: one copy per flush, bounded memory, timed flushes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from arena_recording.core.buffer import DeviceLog
from arena_recording.core.encoding import encode_lines
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.recorder import EpisodeRecorder
from arena_recording.core.sinks import JsonlSink
from arena_recording.core.terms import Term, core, variations
from arena_recording.core.variations import build_variations


def test_pack_concatenates_segments_in_order_and_recycles_host_buffers():
    log = DeviceLog(torch.device("cpu"), capacity_bytes=64)
    gen = torch.Generator().manual_seed(0)
    parts = {
        "flag": [torch.rand(3, generator=gen) < 0.5, torch.rand(2, generator=gen) < 0.5],
        "id": [torch.randint(0, 9, (3,), generator=gen), torch.randint(0, 9, (4,), generator=gen)],
        "pos": [torch.rand(2, 3, generator=gen, dtype=torch.float64)],
        "half": [torch.rand(5, generator=gen).to(torch.bfloat16)],
        "narrowed": [torch.arange(3, dtype=torch.int32), torch.arange(2)],  # the first's dtype
    }
    for name, segments in parts.items():
        for segment in segments:
            log.append(name, segment)
    assert log.full  # more bytes than the capacity: the recorder flushes now
    packed = log.pack()
    assert len(log) == 0 and log.nbytes == 0
    columns = packed.wait()
    for name, segments in parts.items():
        first = torch.float32 if segments[0].dtype == torch.bfloat16 else segments[0].dtype
        expected = torch.cat([s.to(first) for s in segments])
        np.testing.assert_array_equal(columns[name], expected.numpy())
    log.append("id", torch.arange(3))
    second = log.pack()
    log.append("id", torch.arange(3))
    assert log.pack(block=False) is None  # both host buffers are still being read
    packed.release()
    third = log.pack(block=False)
    assert third is not None and third.wait()["id"].tolist() == [0, 1, 2]
    second.release()
    third.release()


def make_recorder(tmp_path, flush_every_s: float, capacity_bytes: int | None = None):
    identity = EpisodeIdentity(64)
    sink = JsonlSink(tmp_path / "episodes.jsonl")
    recorder = EpisodeRecorder(
        identity=identity,
        terms=[Term("core", core, {}), Term("variations", variations, {})],
        sink=sink,
        run_id="run",
        rank=0,
        seed=0,
        termination_names=("goal",),
        flush_every_s=flush_every_s,
        capacity_bytes=capacity_bytes,
    )
    (mass,) = build_variations({"mass": {"sampler": {"type": "uniform", "low": 1, "high": 2}}})
    recorder.track(mass)
    return identity, recorder, mass, sink


def reset(identity, recorder, mass, env_ids, length):
    n = len(env_ids)
    done = torch.ones(n, dtype=torch.bool)
    recorder.close(EpisodeEnd(env_ids, length, done, ~done, torch.zeros(n, dtype=torch.long)))
    identity.advance(env_ids, started=length > 0)
    mass.sample(env_ids, seed=0, episode_in_env=identity.episode_in_env[env_ids])


def test_buffer_memory_is_bounded_however_long_the_run(tmp_path):
    capacity = 4096
    identity, recorder, mass, sink = make_recorder(tmp_path, 60.0, capacity_bytes=capacity)
    gen = torch.Generator().manual_seed(0)
    high_water, staging = 0, set()
    reset(identity, recorder, mass, torch.arange(64), torch.zeros(64, dtype=torch.long))
    for _ in range(400):  # 400 reset batches of 8 envs: far more than the buffer holds
        env_ids = torch.randperm(64, generator=gen)[:8]
        reset(identity, recorder, mass, env_ids, torch.randint(1, 50, (8,), generator=gen))
        high_water = max(high_water, recorder._log.nbytes)
        staging.add(recorder._log._staging.numel())
    recorder.finish()
    sink.close()
    assert high_water < capacity  # flushed when full, long before a minute had passed
    assert max(staging) <= capacity + 1024  # at most one reset batch past the capacity
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 400 * 8
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert all(1 <= r["variations"]["mass"] <= 2 for r in records)


def test_records_reach_the_file_within_the_flush_interval_without_more_calls(tmp_path):
    identity, recorder, mass, sink = make_recorder(tmp_path, 0.2)
    reset(identity, recorder, mass, torch.arange(64), torch.zeros(64, dtype=torch.long))
    reset(identity, recorder, mass, torch.arange(4), torch.full((4,), 7))
    deadline = time.monotonic() + 5
    while sink.seq < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.seq == 4  # the flushing thread flushed on its own
    recorder.finish()
    sink.close()


ROWS = {
    "env_id": np.array([0, 1, 2]),
    "x": {"a": np.array([0.5, np.nan, -np.inf]), "v": np.array([[1.0, 2.5], [np.inf, 0], [3, 4]])},
    "flag": np.array([True, False, True]),
    "label": ["wood", None, "metal"],
    "nested": [{"k": np.nan}, [1, 2], "s"],
    "time": "2026-01-01T00:00:00.000000+00:00",
}


@pytest.mark.parametrize("orjson", [True, False])
def test_encoder_writes_the_same_values_with_or_without_orjson(orjson):
    code = (
        "import sys, numpy as np, pickle\n"
        + ("" if orjson else "sys.modules['orjson'] = None\n")
        + "from arena_recording.core import encoding\n"
        + f"assert (encoding.orjson is not None) == {orjson}\n"
        + "rows = pickle.loads(sys.stdin.buffer.read())\n"
        + "sys.stdout.buffer.write(encoding.encode_lines(rows, 3))\n"
    )
    import pickle

    done = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(ROWS), capture_output=True, check=True
    )
    lines = done.stdout.decode().splitlines()
    assert b"NaN" not in done.stdout and b"Infinity" not in done.stdout
    assert [json.loads(line) for line in lines] == [
        json.loads(line) for line in encode_lines(ROWS, 3).decode().splitlines()
    ]
    assert json.loads(lines[1]) == {
        "env_id": 1,
        "x": {"a": None, "v": [None, 0.0]},
        "flag": False,
        "label": None,
        "nested": [1, 2],
        "time": "2026-01-01T00:00:00.000000+00:00",
    }


def test_matrix_columns_are_written_as_one_json_array_per_line():
    """Numeric (n, width) columns go through the line template component by component: the
    lines hold the same arrays as encoding each row on its own."""
    from arena_recording.core.encoding import encode_column

    columns = {
        "f32": np.array([[0.5, np.nan, 2.0], [np.inf, -1.25, 0.0]], dtype=np.float32),
        "ints": np.array([[1, -2], [3, 4]]),
        "one": torch.tensor([[True], [False]]),
        "empty": np.zeros((2, 0)),
        "labels": np.array([["a", "b"], ["c", None]], dtype=object),
        "in": {"pos": torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64)},
    }
    lines = [json.loads(line) for line in encode_lines(columns, 2).decode().splitlines()]
    assert lines[0]["f32"] == [0.5, None, 2.0] and lines[1]["f32"] == [None, -1.25, 0.0]
    assert [line["ints"] for line in lines] == [[1, -2], [3, 4]]
    assert [line["one"] for line in lines] == [[True], [False]]
    assert [line["empty"] for line in lines] == [[], []]
    assert [line["labels"] for line in lines] == [["a", "b"], ["c", None]]
    for key, value in [*columns.items(), ("in.pos", columns["in"]["pos"])]:
        if key == "in":
            continue
        per_row = [json.loads(t) for t in encode_column(value, 2, key)]
        path = key.split(".")
        got = [line[path[0]] if len(path) == 1 else line[path[0]][path[1]] for line in lines]
        assert got == per_row, key


def test_unicode_line_separators_are_escaped_so_every_reader_sees_one_line_per_record():
    texts = ["a\x85b", "\u2028", "c\u2029", "\x0b\x0c\x1c"]
    block = encode_lines({"s": texts, "k": "\x85"}, 4)
    lines = block.decode().splitlines()  # splits on U+0085, U+2028, U+2029 and more
    assert [json.loads(line) for line in lines] == [{"s": t, "k": "\x85"} for t in texts]


def test_a_flush_larger_than_an_encoding_chunk_writes_every_record_once(tmp_path):
    identity, recorder, mass, sink = make_recorder(tmp_path, 60.0)
    everyone = torch.arange(64)
    reset(identity, recorder, mass, everyone, torch.zeros(64, dtype=torch.long))
    for length in range(1, 41):  # 2,560 records in one flush: encoded in several chunks
        reset(identity, recorder, mass, everyone, torch.full((64,), length))
    recorder.finish()
    sink.close()
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(2560))
    assert [r["length"] for r in records[::64]] == list(range(1, 41))
    assert all(r["episode_in_env"] == i // 64 for i, r in enumerate(records))


def test_undrawn_rows_are_null_and_counted(tmp_path):
    identity, recorder, mass, sink = make_recorder(tmp_path, 60.0)
    half = torch.arange(32)
    mass.sample(half, seed=0, episode_in_env=identity.episode_in_env[half])  # half the envs
    reset(identity, recorder, mass, torch.arange(64), torch.full((64,), 5))
    recorder.finish()
    sink.close()
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["variations"]["mass"] is None for r in records] == [False] * 32 + [True] * 32
    assert recorder.counts["undrawn:mass"] == 32 and recorder.counts["episodes"] == 64
