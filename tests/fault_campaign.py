"""Hard kills at random moments, then resumes, checked record by record.

Each run records a CartPole evaluation of a fixed number of episodes into a fresh dir with
``recorder.resume=true``, its records written on a thread or by a writer process: its writer process is SIGKILLed at a random moment (while starting,
recording, flushing or finishing), the run is resumed, possibly killed again, and finally
resumed to completion. A kill's moment is drawn as a point in the run's progress (episodes
ended), not in wall time, so the same kills land on a fast and on a slow machine. After every kill and at the end, the records file is checked:

- every complete line parses; at most the last line is torn (and a resume cuts it off);
- ``seq``, ``(run_id, episode_id)`` and ``(env_id, episode_in_env)`` never repeat;
- every record the writer reported written before the kill is there (records lost);
- a killed writer's ``running`` manifest reads as ``crashed`` once its heartbeat is stale;
- at the end: ``seq`` is 0..n-1, every env holds exactly its quota of episodes (numbered
  0..quota-1: nothing lost, nothing twice), each variation value is the one its
  (seed, env, episode) determines, the manifest is completed with one segment per process
  that started, and its counts match the file.

Writers are forked from a process that has imported torch and gymnasium already (a
``forkserver``), so a run costs its recording time, not interpreter start-ups.

Run the campaign (figures for docs/reliability.md)::

    python tests/fault_campaign.py --runs 50 --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HEARTBEAT_S = 0.2
VARIATIONS = {
    "gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 15.0}},
    "masspole": {"sampler": {"type": "normal", "mean": 0.1, "std": 0.01, "low": 0.05}},
    "length": {"sampler": {"type": "choice", "choices": [0.4, 0.5, 0.6]}, "scope": "build"},
}
PRELOAD = [
    "torch",
    "gymnasium",
    "arena_recording.core.session",
    "arena_recording.integrations.gym_wrapper",
    "arena_recording.analysis.compact",  # a finish compacts into Parquet (pandas, pyarrow)
    "arena_recording.analysis.columnar",
]


def recorder(flush_every_s: float, writer: str = "thread") -> dict[str, Any]:
    return {
        "terms": {
            "core": {"func": "arena_recording.core.terms:core"},
            "variations": {"func": "arena_recording.core.terms:variations"},
        },
        "resume": True,
        "flush_every_s": flush_every_s,
        "writer": writer,
    }


def record(out: str, plan: dict[str, Any], progress: Any = None) -> None:
    """One writer process: resume (or start) the recording in ``out`` and step CartPole until
    every env met its quota. ``progress`` (a pipe) gets, after each step, the records in the
    file (all segments) and the episodes ended so far; ``None`` as the last one when it starts
    to finish. ``plan["pace_s"]``, a pause after each step, makes a run last long enough to be
    killed mid-way on a fast machine too."""
    import gymnasium as gym
    import numpy as np

    from arena_recording.core.session import Session
    from arena_recording.core.variations import build_variations
    from arena_recording.integrations.gym_wrapper import VariationsWrapper

    cfg = recorder(plan["flush_every_s"], plan.get("writer", "thread"))
    with Session(cfg, out, heartbeat_s=HEARTBEAT_S):
        env = VariationsWrapper(
            gym.make_vec("CartPole-v1", plan["num_envs"], vectorization_mode="sync"),
            build_variations(VARIATIONS),
            seed=plan["seed"],
            success="truncated",
            num_episodes=plan["num_episodes"],
        )
        env.reset(seed=plan["seed"])
        rng = np.random.default_rng()
        while not env.identity.quota_met():
            env.step(rng.integers(0, 2, env.num_envs))
            time.sleep(plan.get("pace_s", 0.0))
            if progress is not None:
                ended = int(env.identity.episode_in_env.sum())
                progress.send((env.recorder.sink.seq, ended))
        if progress is not None:
            progress.send(None)
        env.close()


@dataclass
class Figures:
    """What a campaign did and found."""

    runs: int = 0
    writers: int = 0
    kills: int = 0
    kills_by_phase: dict[str, int] = field(default_factory=dict)
    records_checked: int = 0
    records_final: int = 0
    torn_lines: int = 0
    crashed_detected: int = 0
    resumes: int = 0
    records_lost: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def phase(self, name: str, count: int = 1) -> None:
        self.kills_by_phase[name] = self.kills_by_phase.get(name, 0) + count

    def add(self, other: Figures) -> None:
        for name, value in asdict(other).items():
            if name == "kills_by_phase":
                for phase, count in value.items():
                    self.phase(phase, count)
            elif name == "problems":
                self.problems += value
            else:
                setattr(self, name, getattr(self, name) + value)


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Parsed complete lines, the torn tail (0 or 1) and the problems found."""
    if not path.exists():
        return [], 0, []
    data = path.read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    problems = []
    records = []
    for number, line in enumerate(complete.split(b"\n") if complete else [], 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            problems.append(f"{path}:{number} is a complete line that does not parse")
    return records, int(bool(tail)), problems


def duplicates(records: list[dict[str, Any]]) -> list[str]:
    found = []
    for key in (("seq",), ("run_id", "episode_id"), ("env_id", "episode_in_env")):
        values = Counter(tuple(r[k] for k in key) for r in records)
        repeated = [v for v, n in values.items() if n > 1]
        if repeated:
            found.append(f"{len(repeated)} repeated {key}, e.g. {repeated[0]}")
    return found


def check_after_kill(out: Path, reported: int, figures: Figures) -> None:
    from arena_recording.core.format import read_manifest, status_now

    records, torn, problems = read_lines(out / "episodes.jsonl")
    figures.records_checked += len(records)
    figures.torn_lines += torn
    figures.problems += problems
    repeated = duplicates(records)
    figures.duplicates += len(repeated)
    figures.problems += repeated
    if [r["seq"] for r in records] != list(range(len(records))):
        figures.problems.append(f"{out}: seq is not 0..{len(records) - 1} after a kill")
    manifest_path = out / "manifest.json"
    if not manifest_path.exists():
        figures.phase("before the manifest existed")
        return
    manifest = read_manifest(manifest_path)
    lost = max(0, reported - len(records))
    if lost:
        figures.records_lost += lost
        figures.problems.append(f"{out}: {lost} records reported written are missing")
    if manifest.status == "running":
        figures.phase("while recording")
        later = datetime.now(UTC) + timedelta(seconds=5 * HEARTBEAT_S + 1)
        if status_now(manifest) == "running" and status_now(manifest, later) == "crashed":
            figures.crashed_detected += 1
        else:
            figures.problems.append(f"{out}: a killed writer's manifest is not reported crashed")
    else:
        figures.phase(f"while finishing (manifest {manifest.status})")


def check_final(out: Path, plan: dict[str, Any], writers: int, figures: Figures) -> None:
    import torch

    from arena_recording.core.format import read_manifest
    from arena_recording.core.variations import build_variations

    records, torn, problems = read_lines(out / "episodes.jsonl")
    figures.records_checked += len(records)
    figures.records_final += len(records)
    figures.problems += problems + duplicates(records)
    where = str(out)
    if torn:
        figures.problems.append(f"{where}: a torn line after a completed resume")
    if [r["seq"] for r in records] != list(range(len(records))):
        figures.problems.append(f"{where}: seq is not 0..{len(records) - 1}")
    num_envs, total = plan["num_envs"], plan["num_episodes"]
    quota = [total // num_envs + (e < total % num_envs) for e in range(num_envs)]
    per_env: dict[int, list[int]] = {}
    for r in records:
        per_env.setdefault(r["env_id"], []).append(r["episode_in_env"])
    for env in range(num_envs):
        if sorted(per_env.get(env, [])) != list(range(quota[env])):
            missing = len(set(range(quota[env])) - set(per_env.get(env, [])))
            figures.records_lost += missing
            figures.problems.append(f"{where}: env {env} holds {sorted(per_env.get(env, []))}")
    manifest = read_manifest(out / "manifest.json")
    if manifest.status != "completed" or manifest.counts.episodes != len(records):
        figures.problems.append(f"{where}: manifest {manifest.status} {manifest.counts}")
    ids = [s.id for s in manifest.segments]
    firsts = [s.first_seq for s in manifest.segments]
    if len(set(ids)) != len(ids) or firsts != sorted(firsts) or len(ids) > writers:
        figures.problems.append(f"{where}: segments {manifest.segments}")
    if len({r["run_id"] for r in records}) > 1:
        figures.problems.append(f"{where}: several run ids in one recording")
    for variation in build_variations(VARIATIONS):
        env = torch.tensor([r["env_id"] for r in records])
        episode = torch.tensor([r["episode_in_env"] for r in records])
        drawn = variation.sample(
            env, seed=plan["seed"], episode_in_env=episode, dtype=torch.float64
        )
        labels = variation.labels
        expected = drawn.tolist() if labels is None else [labels[i] for i in drawn.tolist()]
        got = [r["variations"][variation.key] for r in records]
        if got != expected:
            bad = sum(g != e for g, e in zip(got, expected, strict=True))
            figures.problems.append(
                f"{where}: {bad} values of {variation.key!r} are not their draw"
            )


def one_run(ctx: Any, out: Path, plan: dict[str, Any], rng: random.Random, figures: Figures):
    """Kill the writer ``plan['kills']`` times, then resume to the end. A fifth of the kills
    land while the writer starts; the others once a random share of the run's episodes ended
    (up to 90 %, so the writer is still recording or flushing); one in ten within 0.1 s of
    the start of its finish (or after it ended: counted as no kill)."""
    writers = 0
    for _ in range(plan["kills"]):
        receive, send = ctx.Pipe(duplex=False)
        writer = ctx.Process(target=record, args=(str(out), plan, send))
        writer.start()
        writers += 1
        send.close()
        moment, finishing = rng.random(), rng.uniform(0.0, 0.1)
        if moment < 0.2:
            target, deadline = None, time.monotonic() + rng.uniform(0.0, 0.05)
        else:
            share = float("inf") if moment > 0.9 else rng.uniform(0.0, 0.9)
            target, deadline = share * plan["num_episodes"], float("inf")
        reported = 0
        while time.monotonic() < deadline and writer.is_alive():
            if receive.poll(0.005):
                try:
                    progress = receive.recv()
                except EOFError:
                    break
                if progress is None:  # it starts to finish
                    deadline, target = time.monotonic() + finishing, None
                    continue
                reported, ended = progress
                if target is not None and ended >= target:
                    break
        with contextlib.suppress(ProcessLookupError):  # it may have completed already
            os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        while receive.poll():  # what it reported before it died
            try:
                progress = receive.recv()
            except EOFError:
                break
            reported = reported if progress is None else progress[0]
        receive.close()
        if writer.exitcode != -signal.SIGKILL:
            figures.phase(f"none: the writer had ended (exit code {writer.exitcode})")
            continue
        figures.kills += 1
        check_after_kill(out, reported, figures)
    writer = ctx.Process(target=record, args=(str(out), plan))
    writer.start()
    writer.join()
    writers += 1
    figures.resumes += writers - 1
    figures.writers += writers
    if writer.exitcode != 0:
        figures.problems.append(f"{out}: the final resume exited with {writer.exitcode}")
        return
    check_final(out, plan, writers, figures)


def campaign(runs: int, seed: int, root: Path | None = None) -> Figures:
    """``runs`` runs of random size, flush interval and number of kills."""
    rng = random.Random(seed)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    figures = Figures()
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for run in range(runs):
            plan = {
                "num_envs": rng.choice([1, 3, 8, 16]),
                "num_episodes": rng.choice([100, 400, 1500]),
                "flush_every_s": rng.choice([0.0, 0.05, 0.5]),
                "seed": rng.randrange(2**31),
                "kills": rng.choice([1, 1, 2, 3]),
                "writer": rng.choice(["thread", "process"]),
            }
            one_run(ctx, Path(tmp) / str(run), plan, rng, figures)
            figures.runs += 1
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.monotonic()
    figures = campaign(args.runs, args.seed)
    report = asdict(figures) | {"seconds": round(time.monotonic() - start, 1)}
    print(json.dumps(report, indent=2, default=dict))
    sys.exit(1 if figures.problems else 0)


if __name__ == "__main__":
    main()
