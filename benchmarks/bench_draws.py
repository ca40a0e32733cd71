"""Philox draws for a reset batch against ``torch.rand``: one draw, and an env's five variations.

Two tables. *One draw*: each backend of :func:`arena_recording.core.philox.philox_uniforms`
drawing 3 components, against ``torch.rand`` of the same shape and dtype (float64). *Five
factors* (widths 1, 3, 1, 1, 1, as an env resetting draws its variations): one
:func:`~arena_recording.core.philox.philox_uniforms_multi` call per backend, against five single
Philox draws and five ``torch.rand`` calls. Rounds are interleaved and medians reported; on CUDA
also the host time a call takes to launch, the kernels and host synchronizations it costs, and
whether CUDA gives the CPU's bits.

    python benchmarks/bench_draws.py                  # CPU: numpy and eager torch
    python benchmarks/bench_draws.py --backends numpy eager compiled   # + inductor C++ (slow)
    python benchmarks/bench_draws.py --device cuda    # eager, compiled (fused kernels), triton
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from arena_recording.core import philox
from arena_recording.core.philox import derive_key, philox_uniforms, philox_uniforms_multi
from arena_recording.core.sampling import stable_hash

COMPONENTS = 3
KEY = derive_key(seed=0, key_hash=stable_hash("object.pose"))
FACTOR_NUMELS = (1, 3, 1, 1, 1)
FACTOR_KEYS = tuple(
    derive_key(0, stable_hash(f"object.{name}"))
    for name in ("mass", "pose", "size", "color", "damping")
)
CUDA_BACKENDS = ["eager", "compiled"] + (["triton"] if philox.triton is not None else [])


def _batch(envs: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A reset batch: every env, each in some episode."""
    env_ids = torch.arange(envs, device=device)
    return env_ids, (env_ids * 7919) % 113


def _variants(envs: int, device: str, backends: list[str]) -> dict[str, Callable[[], object]]:
    """One draw of ``COMPONENTS`` uniforms per env."""
    env_ids, episodes = _batch(envs, device)
    variants: dict[str, Callable[[], object]] = {
        "torch.rand": lambda: torch.rand(envs, COMPONENTS, dtype=torch.float64, device=device)
    }
    for backend in backends:
        variants[f"philox {backend}"] = lambda b=backend: philox_uniforms(
            KEY, env_ids, episodes, 0, COMPONENTS, backend=b
        )
    return variants


def _factor_variants(
    envs: int, device: str, backends: list[str]
) -> dict[str, Callable[[], object]]:
    """An env's five variations: one multi-key draw, five single draws, five ``torch.rand``."""
    env_ids, episodes = _batch(envs, device)
    variants: dict[str, Callable[[], object]] = {
        "torch.rand x5": lambda: [
            torch.rand(envs, m, dtype=torch.float64, device=device) for m in FACTOR_NUMELS
        ]
    }
    for backend in backends:
        variants[f"philox {backend} multi"] = lambda b=backend: philox_uniforms_multi(
            FACTOR_KEYS, FACTOR_NUMELS, env_ids, episodes, 0, backend=b
        )
        variants[f"philox {backend} x5"] = lambda b=backend: [
            philox_uniforms(k, env_ids, episodes, 0, m, backend=b)
            for k, m in zip(FACTOR_KEYS, FACTOR_NUMELS, strict=True)
        ]
    return variants


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _first_calls(variants: dict[str, Callable[[], object]], device: str) -> dict[str, float]:
    """Seconds of each variant's first call (compilation for ``compiled``)."""
    first = {}
    for name, fn in variants.items():
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        first[name] = time.perf_counter() - start
    return first


def _medians(
    variants: dict[str, Callable[[], object]], device: str, rounds: int
) -> dict[str, float]:
    """Median seconds per call from start until the result is ready, rounds interleaved.

    Each round runs the variants in a new random order, so that what one leaves behind (caches,
    busy worker threads) does not always slow the same next one.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name, fn in order:
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _host_seconds(fn: Callable[[], object], calls: int = 500) -> float:
    """Host seconds per call when calls are issued back to back, without waiting for the GPU."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls


def _kernels(fn: Callable[[], object], calls: int = 10) -> float:
    """CUDA kernels and copies per call, from the profiler's device-side activity."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    device_events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(device_events) / calls


def _syncs(fn: Callable[[], object], calls: int = 10) -> float:
    """Host synchronizations per call, as ``torch.cuda.set_sync_debug_mode('warn')`` sees them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(calls):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / calls


def _same_bits_as_cpu(envs: int) -> bool:
    env_ids, episodes = _batch(envs, "cuda")
    cpu_ids = env_ids.cpu(), episodes.cpu()
    cpu = philox_uniforms(KEY, *cpu_ids, 0, COMPONENTS)
    cpu_multi = philox_uniforms_multi(FACTOR_KEYS, FACTOR_NUMELS, *cpu_ids, 0)
    return all(
        torch.equal(philox_uniforms(KEY, env_ids, episodes, 0, COMPONENTS, backend=b).cpu(), cpu)
        and torch.equal(
            philox_uniforms_multi(
                FACTOR_KEYS, FACTOR_NUMELS, env_ids, episodes, 0, backend=b
            ).cpu(),
            cpu_multi,
        )
        for b in CUDA_BACKENDS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--envs", type=int, nargs="+", default=[45, 4096])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--backends", nargs="+", default=None)
    args = parser.parse_args()
    device = args.device
    backends = args.backends or (["numpy", "eager"] if device == "cpu" else CUDA_BACKENDS)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}); torch {torch.__version__}; {args.rounds} rounds\n")
    tables = {
        f"One draw of {COMPONENTS} components": (_variants, "torch.rand"),
        f"Five factors, widths {FACTOR_NUMELS}": (_factor_variants, "torch.rand x5"),
    }
    for title, (make_variants, baseline) in tables.items():
        header = f"| envs | variant | first call ms | median µs | x {baseline} |"
        if device == "cuda":
            header += " host µs/call | kernels+copies/call | host syncs/call |"
        print(f"{title}\n\n{header}")
        print("|" + "---|" * (header.count("|") - 1))
        for envs in args.envs:
            variants = make_variants(envs, device, backends)
            first = _first_calls(variants, device)
            medians = _medians(variants, device, args.rounds)
            for variant, median in medians.items():
                row = (
                    f"| {envs} | {variant} | {first[variant] * 1e3:.1f} | {median * 1e6:.1f} "
                    f"| {median / medians[baseline]:.2f} |"
                )
                if device == "cuda":
                    fn = variants[variant]
                    row += (
                        f" {_host_seconds(fn) * 1e6:.1f} | {_kernels(fn):.0f} | {_syncs(fn):.0f} |"
                    )
                print(row)
        print()
    if device == "cuda":
        same = all(_same_bits_as_cpu(envs) for envs in args.envs)
        print(f"CUDA ({', '.join(CUDA_BACKENDS)}) bit-identical to CPU numpy: {same}")


if __name__ == "__main__":
    main()
