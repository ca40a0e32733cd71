"""A hard kill (SIGKILL) mid-run loses at most the last ``flush_every_s`` seconds of records,
never a flushed one, and leaves no partial line behind once the file is reopened."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from arena_recording.core.format import read_manifest, read_records
from arena_recording.core.sinks import JsonlSink

FLUSH_EVERY_S = 0.5
SLACK_S = 0.5  # encoding and writing one flush, on a loaded machine

CHILD = textwrap.dedent(
    """
    import sys, time, gymnasium as gym, numpy as np
    from arena_recording.integrations.gym_wrapper import VariationsWrapper
    from arena_recording.core.session import Session
    from arena_recording.core.variations import build_variations

    cfg = {"terms": {"core": {"func": "arena_recording.core.terms:core"},
                     "variations": {"func": "arena_recording.core.terms:variations"}},
           "flush_every_s": float(sys.argv[2]), "writer": sys.argv[3]}
    with Session(cfg, sys.argv[1]):
        variations = build_variations({"gravity": {"sampler": {"type": "uniform", "low": 5, "high": 15}}})
        env = VariationsWrapper(gym.make_vec("CartPole-v1", 64, vectorization_mode="sync"), variations)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        ended = 0
        process = getattr(env.recorder.writer, "_process", None)
        writer_pid = 0 if process is None else process.pid
        while True:
            _, _, terminated, truncated, _ = env.step(rng.integers(0, 2, 64))
            ended += int((terminated | truncated).sum())
            print(time.time(), ended, env.recorder.sink.seq, writer_pid, flush=True)
    """
)


@pytest.mark.parametrize(
    ("flush_every_s", "writer"),
    [(0.0, "thread"), (FLUSH_EVERY_S, "thread"), (FLUSH_EVERY_S, "process")],
)
def test_sigkill_loses_at_most_one_flush_interval(tmp_path, flush_every_s, writer):
    """Also with a writer process: it dies with the run and what it wrote is whole."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(flush_every_s), writer],
        stdout=subprocess.PIPE,
        text=True,
    )
    progress: list[tuple[float, int, int]] = []  # (time, episodes ended, records written)
    for line in child.stdout:
        t, ended, written, writer_pid = line.split()
        progress.append((float(t), int(ended), int(written)))
        if int(written) >= 300 and progress[-1][0] - progress[0][0] > 4 * FLUSH_EVERY_S:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    if writer == "process":  # the kernel kills the writer process with its parent
        writer_process = psutil.Process(int(writer_pid))
        with contextlib.suppress(psutil.NoSuchProcess):
            writer_process.wait(timeout=10)  # psutil.TimeoutExpired if it outlives the run
    killed_at = progress[-1][0]
    text = (tmp_path / "episodes.jsonl").read_text()
    complete = text[: text.rfind("\n") + 1].splitlines()
    records, torn = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == len(complete) and torn == (not text.endswith("\n"))
    # every episode that ended more than one flush interval before the kill was written
    old = [ended for t, ended, _ in progress if t <= killed_at - flush_every_s - SLACK_S]
    assert old and len(records) >= old[-1]
    assert len(records) >= progress[-1][2]  # and every record reported written
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert len({r["episode_id"] for r in records}) == len(records)
    assert read_manifest(tmp_path / "manifest.json").status == "running"
    with JsonlSink(tmp_path / "episodes.jsonl"):
        pass  # reopening cuts a torn last line, if the kill left one
    assert (tmp_path / "episodes.jsonl").read_text() == "".join(f"{line}\n" for line in complete)
