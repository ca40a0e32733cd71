"""Benchmark: host time of one reset batch and of its parts, in ``bench_gpu_loop``'s loop.

On a GPU an env's step is bound by host time when the env count is modest: what a reset adds
is the Python and the kernel launches of its randomization and recording, not GPU time. This
script calls the reset of each variant of ``bench_gpu_loop`` (*base*: ``torch.rand``;
*variations*: ``sample_variations`` with ``EpisodeIdentity.advance``; *recording*: also the
recorder's ``close`` and draw notifications) for one batch of envs, over and over without
synchronizing, and times the parts alone: microseconds of host time per call, medians of
interleaved rounds. Made for CUDA: on the CPU the same envs resetting at every call outrun
the *variations* variant's ``DrawAhead`` window, which then refills at most calls.

Run (writes ``bench_reset_host.md`` beside this file, or ``--out``)::

    python benchmarks/bench_reset_host.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import bench_gpu_loop as loop
import torch

from arena_recording.core.config import RecorderCfg, TermCfg
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.session import Session
from arena_recording.core.terms import core, variations
from arena_recording.core.variations import build_variations, sample_variations


def per_call_us(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Host microseconds per call of ``fn`` (no synchronization between calls)."""
    loop.sync(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    seconds = time.perf_counter() - t0
    loop.sync(device)
    return seconds / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--envs", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=41, help="envs per reset (1% of 4,096)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_reset_host.md"))
    args = parser.parse_args()
    device = torch.device(args.device)
    n, k = args.envs, args.batch
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k].sort().values
    ids = ids.to(device)
    terminated = ids % 2 == 0
    truncated = ~terminated
    length = torch.full((k,), 7, device=device)
    values = torch.ones(k, device=device)

    with tempfile.TemporaryDirectory() as tmp:
        base = loop.Task(n, device, 1)
        base_reset = loop.torch_rand_reset(base)
        plain = loop.Task(n, device, 1)
        plain_identity = EpisodeIdentity(n, device)
        plain_factors = build_variations(loop.FACTORS)
        plain_reset = loop.variations_reset(plain, plain_factors, plain_identity)
        terms = {
            "core": TermCfg(func=core),
            "variations": TermCfg(func=variations),
            "object_height_cm": TermCfg(func=loop.object_height, params={"axis": 2}),
        }
        session = Session(RecorderCfg(terms=terms), Path(tmp) / "run").start()
        recorded = loop.Task(n, device, 1)
        identity = EpisodeIdentity(n, device)
        factors = build_variations(loop.FACTORS)
        recorder = session.bind(
            identity,
            seed=loop.SEED,
            env=recorded,
            termination_names=loop.TERMINATIONS,
            variations=factors,
        )
        recorded_reset = loop.variations_reset(recorded, factors, identity, recorder)
        episode_scope = [v for v in plain_factors if v.scope == "episode"]
        episodes = plain_identity.episode_in_env.index_select(0, ids)
        end = EpisodeEnd(ids, length, terminated, truncated, terminated.long(), terminated)
        parts: dict[str, Callable[[], object]] = {
            "reset, base": lambda: base_reset(ids, terminated, truncated),
            "reset, variations": lambda: plain_reset(ids, terminated, truncated),
            "reset, recording": lambda: recorded_reset(ids, terminated, truncated),
            "EpisodeIdentity.advance": lambda: plain_identity.advance(ids, started=length > 0),
            f"sample_variations ({len(episode_scope)} factors)": lambda: sample_variations(
                episode_scope, ids, seed=loop.SEED, episode_in_env=episodes, device=device
            ),
            "EpisodeRecorder.close (3 terms)": lambda: recorder.close(end),
            "4 index_copy_ (applying the values)": lambda: [
                plain.mass.index_copy_(0, ids, values) for _ in range(4)
            ],
            "one torch.rand": lambda: torch.rand(k, device=device),
        }
        times: dict[str, list[float]] = {name: [] for name in parts}
        for fn in parts.values():  # warm-up: compilation, allocator
            per_call_us(fn, 50, device)
        for _ in range(args.rounds):
            for name, fn in parts.items():
                times[name].append(per_call_us(fn, args.calls, device))
        session.finish()

    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "CPU"
    lines = [
        f"# Host time of one reset batch and its parts ({name})",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, device {device}, "
        f"{args.envs:,} envs, {k} envs per reset, medians of {args.rounds} rounds of "
        f"{args.calls} calls (µs of host time per call, no synchronization).",
        "",
        "| part | µs per call |",
        "|---|---:|",
        *(f"| {part} | {statistics.median(t):.1f} |" for part, t in times.items()),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
