"""Step throughput of the Isaac Lab demo env: no recording, our recording, Isaac Lab's HDF5.

Three configurations of the sliding-cube demo env (64 envs, kit-less on the CPU, the demo's
variations applied in all three), measured in one process, interleaved in rounds so that drift
on a noisy machine hits all of them alike:

- ``off``: no session active (``instrument`` adds nothing);
- ``recording``: a session with the ``core`` and ``variations`` terms;
- ``isaaclab_hdf5``: Isaac Lab's own ``RecorderManager`` exporting a comparable per-episode
  term (episode length, termination flags, final cube state) to HDF5 at every reset.

Run: ``.venv/bin/python benchmarks/bench_isaaclab.py [--steps 300] [--rounds 3]``; the table is
printed and written to ``benchmarks/bench_isaaclab.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf

from arena_recording.core.session import Session
from arena_recording.demo.slide_env import launch, make_env_cfg
from arena_recording.evaluate import SLIDE_VARIATIONS

NUM_ENVS = 64
RECORDER = {
    "terms": {
        "core": {"func": "arena_recording.core.terms:core"},
        "variations": {"func": "arena_recording.core.terms:variations"},
    }
}


def env_cfg(num_envs: int):
    from arena_recording.integrations.isaaclab_variations import variation_event

    cfg = make_env_cfg(num_envs, seed=0)
    for key, spec in OmegaConf.to_container(OmegaConf.create(SLIDE_VARIATIONS)).items():
        setattr(cfg.events, f"variation_{key}", variation_event(key, **spec))
    return cfg


def hdf5_recorders(export_dir: str):
    """Isaac Lab's own per-episode recording, exported to HDF5 at every reset."""
    from isaaclab.managers import RecorderTerm, RecorderTermCfg
    from isaaclab.managers.recorder_manager import DatasetExportMode, RecorderManagerBaseCfg
    from isaaclab.utils import configclass

    class EpisodeSummaryTerm(RecorderTerm):
        def record_pre_reset(self, env_ids):
            env = self._env
            cube = env.scene["cube"].data
            return "episode", {
                "length": env.episode_length_buf[env_ids].float(),
                "terminated": env.termination_manager.terminated[env_ids].float(),
                "truncated": env.termination_manager.time_outs[env_ids].float(),
                "final_pos": cube.root_link_pos_w.torch[env_ids],
            }

    @configclass
    class SummaryRecorderCfg(RecorderManagerBaseCfg):
        summary = RecorderTermCfg(class_type=EpisodeSummaryTerm)

    cfg = SummaryRecorderCfg()
    cfg.dataset_export_dir_path = export_dir
    cfg.dataset_export_mode = DatasetExportMode.EXPORT_ALL
    return cfg


def measure(mode: str, steps: int, workdir: Path, round_index: int) -> tuple[float, int]:
    """Steps per second of one fresh env in ``mode``; also the episodes that finished."""
    from isaaclab.envs import ManagerBasedRLEnv

    from arena_recording.integrations.isaaclab_recording import instrument

    cfg = env_cfg(NUM_ENVS)
    session = None
    if mode == "recording":
        session = Session(RECORDER, workdir / f"recording-{round_index}").start()
        cfg = instrument(cfg)
    elif mode == "isaaclab_hdf5":
        cfg.recorders = hdf5_recorders(str(workdir / f"hdf5-{round_index}"))
    env = ManagerBasedRLEnv(cfg)
    env.reset()
    actions = torch.zeros(NUM_ENVS, 0)
    for _ in range(20):  # warm-up
        env.step(actions)
    episodes = 0
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
        episodes += int(env.termination_manager.dones.sum())
    rate = steps / (time.perf_counter() - start)
    env.close()
    if session is not None:
        session.finish()
    return rate, episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".md"))
    args = parser.parse_args()
    modes = ("off", "recording", "isaaclab_hdf5")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    episodes: dict[str, int] = dict.fromkeys(modes, 0)
    with tempfile.TemporaryDirectory() as tmp, launch():
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                rate, done = measure(mode, args.steps, Path(tmp), r)
                rates[mode].append(rate)
                episodes[mode] += done
                print(f"round {r} {mode}: {rate:.1f} steps/s", flush=True)
    base = statistics.median(rates["off"])
    lines = [
        "# Isaac Lab demo env: step throughput",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" torch {torch.__version__}; {NUM_ENVS} envs, kit-less Newton/MuJoCo-Warp on the CPU,"
        f" {args.steps} steps x {args.rounds} interleaved rounds; medians.",
        "",
        "*cost vs off*: from the medians; *paired*: the median of the per-round costs, each"
        " measured against the `off` run of the same round (less exposed to drift between rounds).",
        "",
        "| configuration | steps/s (median) | per round | episodes | cost vs off | paired |",
        "|---|---|---|---|---|---|",
    ]
    for mode in modes:
        median = statistics.median(rates[mode])
        rounds = ", ".join(f"{r:.1f}" for r in rates[mode])
        cost = 100 * (1 - median / base)
        paired = 100 * statistics.median(
            1 - rate / off for rate, off in zip(rates[mode], rates["off"], strict=True)
        )
        lines.append(
            f"| {mode} | {median:.1f} | {rounds} | {episodes[mode]} | {cost:+.1f}% | {paired:+.1f}% |"
        )
    lines += ["", "Target: recording costs less than 3% of step throughput."]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
