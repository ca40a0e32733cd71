"""Benchmark: what variations and recording cost in an Isaac Lab-like step loop on a GPU.

The loop does what ``ManagerBasedRLEnv.step`` does with thousands of envs: a synthetic
physics step (tensor work calibrated to take ``step_ms`` at each env count), episode lengths
drawn between 50 and 150 steps (about 1% of envs reset per step), done flags, the env ids to
reset read with ``nonzero`` (Isaac Lab's own host synchronization), then the reset of those
envs with 5 randomized factors (mass, a 3-vector initial position, a truncated-normal
friction, a 3-way texture choice, a build-scope light switch). Variants:

- *base*: the factors drawn with ``torch.rand`` / ``randn`` / ``randint``, as Isaac Lab's event
  terms do;
- *variations*: the same factors as ``VariationBase`` objects drawn per (env, episode) with
  ``sample_variations`` (on CUDA one fused kernel for the reset batch; on the CPU, looked up
  in a ``DrawAhead``), with ``EpisodeIdentity.advance``, and no session;
- *recording*: a ``Session`` with terms ``core`` + ``variations`` + one custom term reading
  an env tensor, its records written by ``--writer`` (``recorder.writer``: a thread of this
  process or a writer process); the recorder is closed before each reset, as the adapters do.
  One process holds one session at a time: compare the writers in two runs of the script.

Rounds interleave the variants (order rotated per round); a round runs ``steps`` steps of each.
Overheads are the median per-step time of a variant over the median of *base*, and the median
over rounds of the per-round ratio (paired). Host synchronizations per step are counted with
``torch.cuda.set_sync_debug_mode("warn")`` over separate steps (the loop's own ``nonzero``
counts one). GPU memory the recorder holds: the allocator's growth while it is built and run
(with the high-water mark over a long run), and, exactly, its staging buffer plus the most
tensors it kept between two flushes (*buffer MiB*).

Run on a GPU (writes ``bench_gpu_loop.md`` beside this file, or ``--out``)::

    python benchmarks/bench_gpu_loop.py --device cuda
    python benchmarks/bench_gpu_loop.py --device cpu --sizes 1024 --step-ms 2   # CPU variant
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from arena_recording.core.config import RecorderCfg, TermCfg
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.session import Session
from arena_recording.core.terms import EpisodeBatch, core, variations
from arena_recording.core.variations import (
    DrawAhead,
    VariationBase,
    build_variations,
    sample_variations,
)

SEED = 1234
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
VARIANTS = ("base", "variations", "recording")


def object_height(batch: EpisodeBatch, axis: int = 2) -> torch.Tensor:
    """The custom term: the object's final height in cm, read from the env's state."""
    return batch.env.object_pos[batch.env_ids, axis] * 100.0


class Task:
    """The env's state and its synthetic physics; ``reset`` is what each variant changes."""

    def __init__(self, num_envs: int, device: torch.device, work: int) -> None:
        gen = torch.Generator(device="cpu").manual_seed(SEED)
        self.num_envs, self.device, self.work = num_envs, device, work
        self.state = torch.randn(num_envs, 64, generator=gen).to(device)
        self.weight = (torch.randn(64, 64, generator=gen) / 8).to(device)
        self.max_length = torch.randint(50, 151, (num_envs,), generator=gen).to(device)
        self.length = (torch.rand(num_envs, generator=gen) * 50).long().to(device)
        self.mass = torch.ones(num_envs, device=device)
        self.object_pos = torch.zeros(num_envs, 3, device=device)
        self.friction = torch.ones(num_envs, device=device)
        self.texture = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.light = torch.ones(num_envs, dtype=torch.bool, device=device)
        self.reset: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] = lambda *_: None

    def step(self) -> None:
        for _ in range(self.work):  # the physics: kernels whose time grows with the env count
            self.state = torch.tanh(self.state @ self.weight + self.mass[:, None] * 1e-3)
        self.object_pos += self.state[:, :3] * 1e-4
        self.length += 1
        done = self.length >= self.max_length
        env_ids = done.nonzero().squeeze(-1)  # Isaac Lab's reset ids: a host synchronization
        if len(env_ids):
            terminated = done[env_ids] & (self.max_length[env_ids] % 2 == 0)
            self.reset(env_ids, terminated, ~terminated)
            self.length.index_fill_(0, env_ids, 0)
            self.max_length.index_copy_(
                0, env_ids, torch.randint(50, 151, env_ids.shape, device=self.device)
            )


def torch_rand_reset(task: Task) -> Callable[..., None]:
    """*base*: Isaac Lab's event terms draw from torch's global generator."""
    dev = task.device
    low, high = (
        torch.tensor([-0.1, -0.1, 0.0], device=dev),
        torch.tensor([0.1, 0.1, 0.05], device=dev),
    )

    def reset(env_ids: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> None:
        n = env_ids.shape[0]
        task.mass.index_copy_(0, env_ids, 0.5 + 1.5 * torch.rand(n, device=dev))
        task.object_pos.index_copy_(0, env_ids, low + (high - low) * torch.rand(n, 3, device=dev))
        friction = (0.6 + 0.15 * torch.randn(n, device=dev)).clamp_(0.2, 1.0)
        task.friction.index_copy_(0, env_ids, friction)
        task.texture.index_copy_(0, env_ids, torch.randint(0, 3, (n,), device=dev))

    task.light.copy_(torch.rand((), device=dev) < 0.8)
    return reset


def variations_reset(
    task: Task, factors: list[VariationBase], identity: EpisodeIdentity, recorder=None
) -> Callable[..., None]:
    """*variations* / *recording*: draws per (env, episode); the recorder closes first."""
    by_key = {v.key: v for v in factors}
    episode_scope = [by_key[k] for k in FACTORS if by_key[k].scope == "episode"]
    light = by_key["light.enabled"].sample(None, seed=SEED, device=task.device)
    ahead = DrawAhead()  # CPU: a reset's draws are lookups (CUDA ignores it)
    task.light.fill_(True)
    task.light.logical_and_(light)
    none_fired = torch.tensor(-1, device=task.device)

    def reset(env_ids: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> None:
        length = task.length.index_select(0, env_ids)
        if recorder is not None:
            termination = torch.where(terminated, 0, torch.where(truncated, 1, none_fired))
            recorder.close(
                EpisodeEnd(env_ids, length, terminated, truncated, termination, terminated)
            )
        identity.advance(env_ids, started=length > 0)
        episodes = identity.episode_in_env.index_select(0, env_ids)
        drawn = sample_variations(
            episode_scope,
            env_ids,
            seed=SEED,
            episode_in_env=episodes,
            device=task.device,
            ahead=ahead,
        )
        task.mass.index_copy_(0, env_ids, drawn["object.mass"])
        task.object_pos.index_copy_(0, env_ids, drawn["object.initial_pos"])
        task.friction.index_copy_(0, env_ids, drawn["table.friction"])
        task.texture.index_copy_(0, env_ids, drawn["scene.texture"])

    return reset


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(task: Task, steps: int) -> float:
    """Seconds per step over ``steps`` steps."""
    sync(task.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        task.step()
    sync(task.device)
    return (time.perf_counter() - t0) / steps


def calibrate(num_envs: int, device: torch.device, step_ms: float) -> int:
    """The physics repetitions that make a *base* step take about ``step_ms``."""
    work = 1
    while True:
        task = Task(num_envs, device, work)
        task.reset = torch_rand_reset(task)
        timed_steps(task, 20)
        seconds = timed_steps(task, 50)
        if seconds * 1e3 >= step_ms or work > 100_000:
            return work
        work = max(work + 1, int(work * min(8.0, 0.9 * step_ms / (seconds * 1e3))))


def count_syncs(task: Task, steps: int) -> float:
    """Host synchronizations per step (CUDA only), from the sync debug mode's warnings."""
    if task.device.type != "cuda":
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                task.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def host_times(recorder, task: Task, steps: int) -> dict[str, float]:
    """Host time per step spent in the recorder's close, draws and flushes (medians of calls
    scaled by calls per step), measured over separate steps."""
    times: dict[str, list[float]] = {"close": [], "on_draw": [], "flush": []}
    originals = {name: getattr(recorder, name) for name in times}

    def timed(name: str) -> Callable[..., None]:
        def call(*args, **kwargs) -> None:
            t0 = time.perf_counter()
            originals[name](*args, **kwargs)
            times[name].append(time.perf_counter() - t0)

        return call

    for name in times:
        setattr(recorder, name, timed(name))
    try:
        timed_steps(task, steps)
    finally:
        for name in times:
            delattr(recorder, name)
    return {
        f"{name}_us_per_step": (statistics.mean(t) if name == "flush" else statistics.median(t))
        * len(t)
        / steps
        * 1e6
        for name, t in times.items()
        if t
    }


class FlushCpu:
    """CPU time of the flushing thread (replay, terms, encoding, writing) per record written,
    while installed on ``recorder`` (its ``_write`` runs once per flush, on that thread)."""

    def __init__(self, recorder) -> None:
        self.recorder, self.seconds, self.records = recorder, 0.0, 0
        write = recorder._write

        def timed(*args) -> None:
            t0, seq = time.thread_time(), recorder.sink.seq
            try:
                write(*args)
            finally:
                self.seconds += time.thread_time() - t0
                self.records += recorder.sink.seq - seq

        recorder._write = timed

    def stop(self) -> float:
        """Microseconds per record (NaN when nothing was written)."""
        del self.recorder._write
        return self.seconds / self.records * 1e6 if self.records else float("nan")


def memory() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def bench_size(
    num_envs: int,
    device: torch.device,
    step_ms: float,
    rounds: int,
    steps: int,
    out: Path,
    writer: str,
) -> dict:
    work = calibrate(num_envs, device, step_ms)
    base = Task(num_envs, device, work)
    base.reset = torch_rand_reset(base)

    plain = Task(num_envs, device, work)
    plain_identity = EpisodeIdentity(num_envs, device)
    plain.reset = variations_reset(plain, build_variations(FACTORS), plain_identity)

    terms = {
        "core": TermCfg(func=core),
        "variations": TermCfg(func=variations),
        "object_height_cm": TermCfg(func=object_height, params={"axis": 2}),
    }
    session = Session(
        RecorderCfg(terms=terms, writer=writer), out / f"{num_envs}-{step_ms:g}"
    ).start()
    recorded = Task(num_envs, device, work)
    memory_before = memory()
    factors = build_variations(FACTORS)
    identity = EpisodeIdentity(num_envs, device)
    recorder = session.bind(
        identity, seed=SEED, env=recorded, termination_names=TERMINATIONS, variations=factors
    )
    recorded.reset = variations_reset(recorded, factors, identity, recorder)
    tasks = {"base": base, "variations": plain, "recording": recorded}

    for task in tasks.values():  # warm-up: compilation, allocator, first flushes
        timed_steps(task, max(steps // 2, 200))
    syncs = {name: count_syncs(task, 100) for name, task in tasks.items()}
    host_us = host_times(recorder, recorded, steps)
    sync(device)
    recorder_memory = memory() - memory_before
    per_step: dict[str, list[float]] = {name: [] for name in VARIANTS}
    flush_cpu = FlushCpu(recorder)
    for r in range(rounds):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for name in order:
            per_step[name].append(timed_steps(tasks[name], steps))
    recorder.flush()
    recorder._thread.drain()
    flush_us_per_record = flush_cpu.stop()
    peak = memory()
    buffered = recorder._log.nbytes
    for _ in range(3):  # a long run: the recorder's memory stays bounded
        for _ in range(steps):
            recorded.step()
            buffered = max(buffered, recorder._log.nbytes)
        peak = max(peak, memory())
    staging = recorder._log._staging.numel()
    session.finish()
    episodes = session.counts().get("episodes", 0)
    median = {name: statistics.median(times) for name, times in per_step.items()}
    paired = {
        name: statistics.median(
            t / b for t, b in zip(per_step[name], per_step["base"], strict=True)
        )
        - 1
        for name in VARIANTS
    }
    return {
        "envs": num_envs,
        "step_ms": step_ms,
        "writer": type(recorder.writer).__name__,
        "work": work,
        "base_ms": median["base"] * 1e3,
        "variations_ms": median["variations"] * 1e3,
        "recording_ms": median["recording"] * 1e3,
        "variations_pct": 100 * (median["variations"] / median["base"] - 1),
        "recording_pct": 100 * (median["recording"] / median["base"] - 1),
        "variations_paired_pct": 100 * paired["variations"],
        "recording_paired_pct": 100 * paired["recording"],
        "syncs": syncs,
        "host_us": host_us,
        "flush_cpu_us_per_record": flush_us_per_record,
        "recorder_mib": recorder_memory / 2**20,
        "recorder_peak_mib": (peak - memory_before) / 2**20,
        "buffer_mib": (staging + buffered) / 2**20,
        "episodes": episodes,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| envs | step | writer | base ms | variations | recording | variations (paired) | "
        "recording (paired) | syncs/step base / var / rec | recorder MiB (peak) | "
        "buffer MiB | episodes | flushing thread CPU µs/record |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["syncs"]
        lines.append(
            f"| {r['envs']:,} | {r['step_ms']:g} ms | {r['writer']} | {r['base_ms']:.3f} | "
            f"{r['variations_pct']:+.1f}% | {r['recording_pct']:+.1f}% | "
            f"{r['variations_paired_pct']:+.1f}% | {r['recording_paired_pct']:+.1f}% | "
            f"{s['base']:.2f} / {s['variations']:.2f} / {s['recording']:.2f} | "
            f"{r['recorder_mib']:.1f} ({r['recorder_peak_mib']:.1f}) | {r['buffer_mib']:.1f} | "
            f"{r['episodes']:,} | {r['flush_cpu_us_per_record']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--step-ms", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="per variant per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_gpu_loop.md"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--writer", default="auto", choices=["auto", "thread", "process"])
    parser.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval (seconds)"
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for step_ms, num_envs in itertools.product(args.step_ms, args.sizes):
            steps = max(50, int(args.seconds * 1e3 / step_ms))
            row = bench_size(num_envs, device, step_ms, args.rounds, steps, Path(tmp), args.writer)
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "CPU"
    header = (
        f"# GPU step loop: variations and recording against torch.rand ({name})\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, python "
        f"{platform.python_version()}, device {device}, {args.rounds} interleaved rounds of "
        f"about {args.seconds:g} s per variant. Percentages: median step time over *base*'s; "
        "paired: median over rounds of the per-round ratio.\n\n"
    )
    text = header + table(rows) + "\n"
    print(text)
    args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
