"""Resume and rebind never repeat an identity: after a SIGKILL, ``resume=true`` continues
``seq``, ``episode_id`` and each env's ``episode_in_env`` from the records file itself (the
manifest's counts are stale after a kill) and adds a segment; a second env bound in one
session continues ``episode_id``."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from fault_campaign import PRELOAD, record

from arena_recording.core.format import read_manifest, read_records
from arena_recording.core.session import Session
from arena_recording.core.sinks import JsonlSink
from arena_recording.core.variations import build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper

GRAVITY = {"gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 15.0}}}


@pytest.fixture(scope="module")
def ctx():
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def repeated(records: list[dict], *keys: str) -> list[tuple]:
    counts = Counter(tuple(r[k] for k in keys) for r in records)
    return [key for key, n in counts.items() if n > 1]


def kill_while_recording(ctx, out: Path, plan: dict, at_least: int) -> int:
    """Start a writer, SIGKILL it once ``at_least`` records are in the file; the records it
    reported written."""
    receive, send = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=record, args=(str(out), plan, send))
    writer.start()
    send.close()
    written = 0
    while written < at_least:
        assert receive.poll(60), "the writer stopped reporting"
        progress = receive.recv()
        assert progress is not None, "the writer finished before it was killed"
        written = progress[0]  # (records in the file, episodes ended)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    assert writer.exitcode == -signal.SIGKILL
    return written


@pytest.mark.parametrize("flush_every_s", [0.0, 0.5])
def test_sigkill_then_resume_repeats_no_identity(ctx, tmp_path, flush_every_s):
    # ~1,000 steps paced to >= 3 s: several flushes land before the run could end
    plan = {"num_envs": 8, "num_episodes": 400, "flush_every_s": flush_every_s, "seed": 5}
    plan["pace_s"] = 0.003
    written = kill_while_recording(ctx, tmp_path, plan, at_least=100)
    killed = read_manifest(tmp_path / "manifest.json")
    assert killed.status == "running" and killed.counts.episodes <= written  # may be stale
    before, _ = read_records(tmp_path / "episodes.jsonl")
    assert len(before) >= written

    resumed = ctx.Process(target=record, args=(str(tmp_path), plan))
    resumed.start()
    resumed.join()
    assert resumed.exitcode == 0
    records, torn = read_records(tmp_path / "episodes.jsonl")
    assert torn == 0
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert repeated(records, "run_id", "episode_id") == []
    assert repeated(records, "env_id", "episode_in_env") == []
    assert records[: len(before)] == before  # nothing written before the kill changed
    # every env ran exactly its quota, numbered 0..49: the resume filled in what was lost
    for env in range(8):
        assert sorted(r["episode_in_env"] for r in records if r["env_id"] == env) == list(range(50))
    manifest = read_manifest(tmp_path / "manifest.json")
    assert manifest.status == "completed" and manifest.counts.episodes == len(records) == 400
    assert manifest.run_id == killed.run_id and {r["run_id"] for r in records} == {killed.run_id}
    first, second = manifest.segments
    assert first == killed.segments[0] and second.id != first.id
    assert second.first_seq == len(before)
    assert second.first_episode_id == max(r["episode_id"] for r in before) + 1


def test_resume_cuts_a_torn_line_and_continues_after_the_last_whole_record(tmp_path, recorder_cfg):
    run(tmp_path, recorder_cfg, episodes=12)
    path = tmp_path / "episodes.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"schema_version": 2, "seq": 12, "episode_id": 9')  # a kill
    run(tmp_path, {**recorder_cfg, "resume": True}, episodes=24)
    records, torn = read_records(path)
    assert torn == 0 and path.read_bytes().startswith(whole)
    assert [r["seq"] for r in records] == list(range(24))
    assert (
        repeated(records, "episode_id") == []
        and repeated(records, "env_id", "episode_in_env") == []
    )


def test_a_second_env_in_one_session_continues_episode_id(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path):
        first = make_env(seed=3, episodes=8)
        step_until_done(first)
        first.close()
        second = make_env(seed=3, episodes=8)
        step_until_done(second)
        second.close()
    records, _ = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == 16 and repeated(records, "run_id", "episode_id") == []
    assert [r["seq"] for r in records] == list(range(16))
    # the same seed replays the same factor values on the second env, under new episode ids
    by_pair: dict[tuple, list[float]] = {}
    for r in records:
        by_pair.setdefault((r["env_id"], r["episode_in_env"]), []).append(
            r["variations"]["gravity"]
        )
    assert all(len(v) == 2 and v[0] == v[1] for v in by_pair.values())
    assert len(read_manifest(tmp_path / "manifest.json").envs) == 2


def test_resume_refuses_while_another_process_writes(ctx, tmp_path, recorder_cfg):
    plan = {"num_envs": 4, "num_episodes": 10**6, "flush_every_s": 0.0, "seed": 1}
    receive, send = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=record, args=(str(tmp_path), plan, send))
    writer.start()
    try:
        assert receive.poll(60)
        with pytest.raises(FileExistsError, match="being written by another process"):
            Session({**recorder_cfg, "resume": True}, tmp_path).start()
        time.sleep(0.1)
        assert writer.is_alive()
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
    records, _ = read_records(tmp_path / "episodes.jsonl")
    assert [r["seq"] for r in records] == list(range(len(records)))
    with JsonlSink(tmp_path / "episodes.jsonl"):
        pass  # the lock went with the killed writer


def make_env(seed: int, episodes: int) -> VariationsWrapper:
    return VariationsWrapper(
        gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"),
        build_variations(GRAVITY),
        seed=seed,
        num_episodes=episodes,
    )


def step_until_done(env: VariationsWrapper) -> None:
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    while not env.identity.quota_met():
        env.step(rng.integers(0, 2, env.num_envs))


def run(out: Path, cfg: dict, episodes: int) -> None:
    with Session(cfg, out):
        env = make_env(seed=1, episodes=episodes)
        step_until_done(env)
        env.close()
