"""Benchmark of the episode recorder: throughput, the cost of recording off, and memory.

Three measurements, all on CPU tensors, in one process so that ratios compare like with like:

1. **Recording throughput.** A synthetic env of 64 / 1024 / 4096 / 16384 envs driven exactly like
   an adapter drives a ``Session``: at every reset batch ``recorder.close(EpisodeEnd(...))`` for
   all envs, ``identity.advance(...)``, then the episode-scope variations are sampled for those
   envs through ``VariationBase.sample`` (which notifies the recorder). Terms: ``core``,
   ``variations`` (5 factors: uniform scalar, uniform 3-vector, truncated normal, string choice,
   build-scope bernoulli) and one custom term computing a float per episode from an env tensor.
   "record" times ``close`` (terms, encoding, write); "sample" times advance and draws. The
   *floor* serializes and writes the very same records and nothing else: the written lines are
   parsed back into dicts (untimed), then ``json.dumps`` of each dict plus one write and one
   flush per batch is timed. Medians over batches, after warm-up batches.
2. **Step loop.** gymnasium CartPole, 64 sync envs, pre-generated random actions: the raw env
   against ``VariationsWrapper(env, [], seed=0)`` with no active session ("recording off"), and,
   for information, with one episode-scope variation and no session, and with a session on.
   Repetitions are interleaved (raw and recording off back to back, in alternating order, then
   the others); the overhead is the median of the per-round time ratios against the raw env of
   the same round.
3. **Memory.** RSS (psutil) while recording 1,000,000 episodes (4096 envs x 245 batches), after
   warm-up and at checkpoints; the growth is end minus after warm-up.

Run it (about 3 minutes on 2 cores) and write the results beside this file::

    .venv/bin/python benchmarks/bench_recorder.py

``--quick`` runs a short smoke version and only prints its tables. Torch runs one intra-op
thread unless ``--torch-threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil
import torch

from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.recorder import EpisodeRecorder
from arena_recording.core.sampling import Scope
from arena_recording.core.session import RecorderCfg, Session
from arena_recording.core.terms import EpisodeBatch, TermCfg, core, variations
from arena_recording.core.variations import VariationBase, build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper

SEED = 1234
RESULTS = Path(__file__).with_name("bench_recorder.md")
FACTORS = {
    "object.mass": {"sampler": {"type": "uniform", "low": 0.5, "high": 2.0}},
    "object.initial_pos": {
        "sampler": {"type": "uniform", "low": [-0.1, -0.1, 0.0], "high": [0.1, 0.1, 0.05]}
    },
    "table.friction": {
        "sampler": {"type": "normal", "mean": 0.6, "std": 0.15, "low": 0.2, "high": 1.0}
    },
    "scene.texture": {"sampler": {"type": "choice", "choices": ["wood", "metal", "plastic"]}},
    "light.enabled": {"sampler": {"type": "bernoulli", "p": 0.8}, "scope": "build"},
}
TERMINATIONS = ("object_dropped", "time_out")
RSS_WARMUP_BATCHES = 10


@dataclass
class Config:
    sizes: tuple[int, ...]
    episodes_per_size: int
    min_batches: int
    warmup_batches: int
    steps: int
    rounds: int
    rss_envs: int
    rss_batches: int
    device: str = "cpu"


FULL = Config((64, 1024, 4096, 16384), 400_000, 20, 3, 500, 41, 4096, 245)
QUICK = Config((64, 1024), 20_000, 5, 1, 200, 5, 1024, 30)


class SyntheticEnv:
    """Stands in for an env: per-env state that the custom term reads."""

    def __init__(self, num_envs: int, device: str) -> None:
        gen = torch.Generator().manual_seed(SEED)
        self.object_pos = torch.rand(num_envs, 3, generator=gen).to(device)


def object_height(batch: EpisodeBatch, axis: int = 2) -> torch.Tensor:
    """The custom term: one float per episode, computed from an env tensor."""
    return batch.env.object_pos[batch.env_ids, axis] * 100.0


def recorder_cfg() -> RecorderCfg:
    """Flushed at every reset batch, so ``close`` times the whole record path (terms,
    encoding, write) on the calling thread."""
    return RecorderCfg(
        terms={
            "core": TermCfg(func=core),
            "variations": TermCfg(func=variations),
            "object_height_cm": TermCfg(func=object_height, params={"axis": 2}),
        },
        flush_every_s=0,
    )


def episode_ends(num_envs: int, count: int, device: str) -> list[EpisodeEnd]:
    """``count`` different batches in which every env ends an episode of 1 to 500 steps."""
    gen = torch.Generator().manual_seed(SEED)
    ends = []
    for _ in range(count):
        terminated = torch.rand(num_envs, generator=gen) < 0.7
        end = EpisodeEnd(
            env_ids=torch.arange(num_envs),
            length=torch.randint(1, 501, (num_envs,), generator=gen),
            terminated=terminated,
            truncated=~terminated,
            termination=(~terminated).long(),
            success=terminated & (torch.rand(num_envs, generator=gen) < 0.5),
        )
        ends.append(EpisodeEnd(**{k: v.to(device) for k, v in vars(end).items()}))
    return ends


class Harness:
    """A session, a bound recorder and its variations for ``num_envs`` synthetic envs."""

    def __init__(self, num_envs: int, output_dir: Path, device: str = "cpu") -> None:
        self.session = Session(recorder_cfg(), output_dir).start()
        self.variations = build_variations(FACTORS)
        self.identity = EpisodeIdentity(num_envs, device)
        self.device = device
        self.recorder: EpisodeRecorder = self.session.bind(
            self.identity,
            seed=SEED,
            env=SyntheticEnv(num_envs, device),
            termination_names=TERMINATIONS,
            variations=self.variations,
        )
        self.episodic = [v for v in self.variations if v.scope is Scope.episode]
        for variation in self.variations:
            if variation.scope is Scope.build:
                variation.sample(None, seed=SEED, device=device)
        self._sample(torch.arange(num_envs, device=device))
        self.ends = episode_ends(num_envs, 4, device)
        self.batches = 0

    def _sample(self, env_ids: torch.Tensor) -> None:
        episodes = self.identity.episode_in_env[env_ids]
        for variation in self.episodic:
            variation.sample(env_ids, seed=SEED, episode_in_env=episodes)

    def batch(self) -> tuple[float, float]:
        """One reset batch like an adapter runs it; returns (record, sample) seconds."""
        end = self.ends[self.batches % len(self.ends)]
        self.batches += 1
        t0 = time.perf_counter()
        self.recorder.close(end)
        t1 = time.perf_counter()
        self.identity.advance(end.env_ids, started=end.length > 0)
        self._sample(end.env_ids)
        if self.device != "cpu":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    def finish(self) -> Path:
        self.session.finish()
        return self.session.records_path


def floor_times(records_path: Path, batch_size: int, output: Path) -> list[float]:
    """Per batch: ``json.dumps`` of each record dict + one write + one flush (parsing untimed)."""
    times = []
    with open(records_path, encoding="utf-8") as src, open(output, "w", encoding="utf-8") as dst:
        while True:
            lines = [line for _, line in zip(range(batch_size), src, strict=False)]
            if not lines:
                return times
            records = [json.loads(line) for line in lines]
            t0 = time.perf_counter()
            dst.write("\n".join([json.dumps(r) for r in records]) + "\n")
            dst.flush()
            times.append(time.perf_counter() - t0)


def bench_throughput(cfg: Config, tmp: Path) -> list[dict[str, float]]:
    rows = []
    for num_envs in cfg.sizes:
        batches = max(cfg.min_batches, cfg.episodes_per_size // num_envs) + cfg.warmup_batches
        harness = Harness(num_envs, tmp / f"throughput-{num_envs}", cfg.device)
        times = [harness.batch() for _ in range(batches)]
        records_path = harness.finish()
        floor = floor_times(records_path, num_envs, tmp / f"floor-{num_envs}.jsonl")
        if len(floor) != batches:
            raise RuntimeError(f"{num_envs} envs: {len(floor)} batches written, {batches} run")
        measured = slice(cfg.warmup_batches, None)
        record = statistics.median(t for t, _ in times[measured])
        sample = statistics.median(s for _, s in times[measured])
        floor_s = statistics.median(floor[measured])
        rows.append(
            {
                "envs": num_envs,
                "batches": batches - cfg.warmup_batches,
                "record_ms": record * 1e3,
                "sample_ms": sample * 1e3,
                "floor_ms": floor_s * 1e3,
                "record_eps": num_envs / record,
                "floor_eps": num_envs / floor_s,
                "ratio": record / floor_s,
            }
        )
        print(f"  {num_envs} envs: record {record * 1e3:.2f} ms, floor {floor_s * 1e3:.2f} ms")
    return rows


def cartpole() -> gym.vector.VectorEnv:
    return gym.make_vec("CartPole-v1", num_envs=64, vectorization_mode="sync")


def gravity() -> list[VariationBase]:
    return build_variations({"gravity": {"sampler": {"type": "uniform", "low": 9.0, "high": 10.6}}})


def time_steps(env: gym.vector.VectorEnv, actions: np.ndarray) -> float:
    env.reset(seed=SEED)
    t0 = time.perf_counter()
    for action in actions:
        env.step(action)
    return (time.perf_counter() - t0) / len(actions)


def bench_step_loop(cfg: Config, tmp: Path) -> list[dict[str, float | str]]:
    actions = np.random.default_rng(SEED).integers(0, 2, size=(cfg.steps, 64))
    envs: dict[str, gym.vector.VectorEnv] = {
        "raw env": cartpole(),
        "wrapper, no variations, no session (recording off)": VariationsWrapper(
            cartpole(), [], seed=0
        ),
        "wrapper, 1 variation, no session": VariationsWrapper(cartpole(), gravity(), seed=0),
    }
    session = Session(
        RecorderCfg(terms={"core": TermCfg(func=core), "variations": TermCfg(func=variations)}),
        tmp / "steps",
    )
    with session:
        envs["wrapper, 1 variation, session on"] = VariationsWrapper(cartpole(), gravity(), seed=0)
        names = list(envs)
        for name in names:  # warm-up
            time_steps(envs[name], actions[: max(1, cfg.steps // 10)])
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(cfg.rounds):
            # raw and recording off back to back, ABBA..., then the informative variants
            pair, rest = names[:2], names[2:]
            shift = round_index % len(rest)
            order = (pair if round_index % 2 else pair[::-1]) + rest[shift:] + rest[:shift]
            for name in order:
                times[name].append(time_steps(envs[name], actions))
        for env in envs.values():
            env.close()
    rows = []
    for name in names:
        ratios = [t / r - 1 for t, r in zip(times[name], times["raw env"], strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        rows.append(
            {
                "variant": name,
                "step_us": statistics.median(times[name]) * 1e6,
                "overhead": statistics.median(ratios),
                "q1": q1,
                "q3": q3,
            }
        )
    return rows


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def bench_memory(cfg: Config, tmp: Path) -> list[tuple[int, float]]:
    harness = Harness(cfg.rss_envs, tmp / "memory")
    quarters = (cfg.rss_batches * k // 4 for k in (1, 2, 3, 4))
    checkpoints = {RSS_WARMUP_BATCHES, *(b for b in quarters if b > RSS_WARMUP_BATCHES)}
    points = []
    for index in range(1, cfg.rss_batches + 1):
        harness.batch()
        if index in checkpoints:
            points.append((index * cfg.rss_envs, rss_mb()))
            print(f"  {index * cfg.rss_envs:>9,} episodes: RSS {points[-1][1]:.1f} MB")
    harness.finish()
    return points


@contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench_recorder-") as tmp:
        yield Path(tmp)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
    }
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def throughput_table(throughput: list[dict[str, float]], device: str) -> list[str]:
    lines = [
        "## Recording throughput (per reset batch, every env ends an episode)",
        "",
        f"Terms `core` + `variations` (5 factors) + 1 custom term; {device} tensors. *record*: "
        "`recorder.close` (terms, encoding, write); *sample*: `identity.advance` + 4 "
        "episode-scope draws; *floor*: `json.dumps` per record dict + one write + flush, same "
        f"records. Medians over batches. Torch intra-op threads: {torch.get_num_threads()}.",
        "",
        "| envs | batches | record ms | sample ms | floor ms | recorded episodes/s "
        "| floor episodes/s | record / floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in throughput:
        lines.append(
            f"| {r['envs']:,} | {r['batches']} | {r['record_ms']:.2f} | {r['sample_ms']:.2f} "
            f"| {r['floor_ms']:.2f} | {r['record_eps']:,.0f} | {r['floor_eps']:,.0f} "
            f"| {r['ratio']:.2f}x |"
        )
    return lines


def report(
    throughput: list[dict[str, float]],
    steps: list[dict[str, float | str]],
    memory: list[tuple[int, float]],
    quick: bool,
) -> str:
    lines = [
        "# Recorder benchmark" + (" (quick smoke run)" if quick else ""),
        "",
        f"Machine: {machine()}.",
        "",
        *throughput_table(throughput, "CPU"),
    ]
    lines += [
        "",
        "## Step loop (CartPole, 64 sync envs, random actions)",
        "",
        "Interleaved repetitions; overhead: median of per-round ratios to the raw env, with the "
        "interquartile range of those ratios as the noise level.",
        "",
        "| variant | µs / step (median) | overhead vs raw | ratio IQR |",
        "|---|---:|---:|---:|",
    ]
    for r in steps:
        lines.append(
            f"| {r['variant']} | {r['step_us']:.1f} | {r['overhead']:+.2%} "
            f"| {r['q1']:+.2%} .. {r['q3']:+.2%} |"
        )
    start_episodes, start_rss = memory[0]
    end_episodes, end_rss = memory[-1]
    lines += [
        "",
        f"## Memory ({end_episodes:,} recorded episodes)",
        "",
        f"First row: after {RSS_WARMUP_BATCHES} warm-up batches; the growth is measured from it.",
        "",
        "| episodes recorded | RSS MB |",
        "|---:|---:|",
        *(f"| {episodes:,} | {rss:.1f} |" for episodes, rss in memory),
    ]
    at = {r["envs"]: r["ratio"] for r in throughput}
    off = steps[1]["overhead"]
    growth = end_rss - start_rss
    targets = []
    if 4096 in at:
        targets.append(
            f"- record / floor at 4096 envs: {at[4096]:.2f}x (target < 3x): {met(at[4096] < 3)}"
        )
    targets += [
        f"- recording off vs raw env: {off:+.2%} (target < 1%): {met(off < 0.01)}",
        f"- RSS growth from {start_episodes:,} to {end_episodes:,} episodes: {growth:+.1f} MB "
        f"(target < 20 MB): {met(growth < 20)}",
    ]
    return "\n".join([*lines, "", "## Targets", "", *targets, ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run; prints only")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a small shared machine, parallel indexing "
        "of a few thousand elements waits for a busy core, which is noise, not recorder cost)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="with a CUDA device, only the recording throughput is measured, on tensors there; "
        "the table goes to bench_recorder_cuda.md",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    cfg = replace(QUICK if args.quick else FULL, device=args.device)
    if args.device != "cpu":
        with scratch_dir() as tmp:
            rows = bench_throughput(cfg, tmp)
        name = torch.cuda.get_device_name(args.device)
        text = "\n".join(
            [
                f"# Recorder benchmark on {name}",
                "",
                f"Machine: {machine()}.",
                "",
                *throughput_table(rows, f"CUDA ({name})"),
                "",
            ]
        )
        print(text)
        if not args.quick:
            RESULTS.with_name("bench_recorder_cuda.md").write_text(text, encoding="utf-8")
        return
    sections: list[tuple[str, Callable[[Config, Path], object]]] = [
        ("recording throughput", bench_throughput),
        ("step loop", bench_step_loop),
        ("memory", bench_memory),
    ]
    results = []
    with scratch_dir() as tmp:
        for title, bench in sections:
            print(f"{title} ...", flush=True)
            results.append(bench(cfg, tmp))
    text = report(*results, quick=args.quick)
    print(text)
    if not args.quick:
        RESULTS.write_text(text, encoding="utf-8")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
