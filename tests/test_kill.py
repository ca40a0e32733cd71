"""A hard kill (SIGKILL) mid-run loses at most the batch being written, never a flushed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from arena_recording.core.format import read_manifest, read_records
from arena_recording.core.sinks import JsonlSink

CHILD = textwrap.dedent(
    """
    import sys, gymnasium as gym, numpy as np
    from arena_recording.integrations.gym_wrapper import VariationsWrapper
    from arena_recording.core.session import Session, active_session
    from arena_recording.core.variations import build_variations

    cfg = {"terms": {"core": {"func": "arena_recording.core.terms:core"},
                     "variations": {"func": "arena_recording.core.terms:variations"}}}
    with Session(cfg, sys.argv[1]):
        variations = build_variations({"gravity": {"sampler": {"type": "uniform", "low": 5, "high": 15}}})
        env = VariationsWrapper(gym.make_vec("CartPole-v1", 64, vectorization_mode="sync"), variations)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        while True:
            env.step(rng.integers(0, 2, 64))
            print(env.recorder.sink.seq, flush=True)  # records flushed so far
    """
)


def test_sigkill_leaves_every_flushed_record_and_no_duplicates(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    flushed = 0
    for line in child.stdout:
        flushed = int(line)
        if flushed >= 300:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    text = (tmp_path / "episodes.jsonl").read_text()
    complete = text[: text.rfind("\n") + 1].splitlines()
    records, torn = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == len(complete) >= flushed and torn == (not text.endswith("\n"))
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert len({r["episode_id"] for r in records}) == len(records)
    assert read_manifest(tmp_path / "manifest.json").status == "running"
    with JsonlSink(tmp_path / "episodes.jsonl"):
        pass  # reopening cuts a torn last line, if the kill left one
    assert (tmp_path / "episodes.jsonl").read_text() == "".join(f"{line}\n" for line in complete)
