"""Pools: which jobs of a sweep may be analysed as one set of episodes.

Pooling the episodes of jobs that differ in more than their variations confounds the factors
with whatever else changed (a policy checkpoint, a task, a number of envs): a factor's effect
and a checkpoint's would be mixed. So jobs are pooled only when every override they do not
share is a variation's (``variations.*``, whose effect the factor columns carry), a seed, or
the recorder's and Hydra's own settings; jobs that differ in anything else are analysed apart,
one pool per combination of those overrides. A run or a records file is one pool.

Example::

    for pool in pools(rec):
        print(pool.describe())           # "jobs 0, 1 pooled: ..." / "jobs 2, 3 (policy=b) ..."
        print(sensitivity(pool.recording(rec)).summary())
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from arena_recording.analysis.load import Recording
from arena_recording.analysis.outcomes import swept_overrides
from arena_recording.analysis.sweeps import JobRecording

POOLABLE_PREFIXES = ("variations.", "recorder.", "hydra.")


def poolable(key: str) -> bool:
    """Whether jobs that differ in override ``key`` can be pooled: variations, seeds, and the
    recorder's and Hydra's settings change no factor's meaning."""
    return key.startswith(POOLABLE_PREFIXES) or key == "seed" or key.endswith(".seed")


@dataclass
class Pool:
    """Jobs analysed together: ``fixed`` holds the non-poolable overrides they share and other
    pools do not; ``varied`` the poolable overrides that differ between them."""

    jobs: list[JobRecording]
    fixed: dict[str, Any]
    varied: list[str]
    sweep: bool

    def label(self, rec: Recording) -> str:
        names = ", ".join(str(j.num) if j.num is not None else j.label(rec.path) for j in self.jobs)
        return f"job{'s' if len(self.jobs) > 1 else ''} {names}"

    def describe(self, rec: Recording) -> str:
        """What the pool is and why, in plain words."""
        if not self.sweep:
            return ""
        fixed = " ".join(f"{k}={_text(v)}" for k, v in self.fixed.items())
        head = self.label(rec) + (f" ({fixed})" if fixed else "")
        if len(self.jobs) == 1:
            return f"{head}: analysed alone"
        why = (
            f"they differ only in {', '.join(self.varied)}, which the factors carry"
            if self.varied
            else "their overrides agree"
        )
        return f"{head} pooled: {why}"

    def recording(self, rec: Recording) -> Recording:
        """``rec`` narrowed to this pool's jobs and their episodes."""
        if not self.sweep:
            return rec
        dirs = {str(job.dir.relative_to(rec.path)) for job in self.jobs}
        episodes = rec.episodes[rec.episodes["job_dir"].isin(dirs)].reset_index(drop=True)
        manifests = [m for job in self.jobs for m in job.manifests]
        return replace(rec, episodes=episodes, jobs=list(self.jobs), manifests=manifests)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def pools(rec: Recording) -> list[Pool]:
    """The pools of a recording: one for a run or file, one per combination of non-poolable
    overrides for a sweep (jobs that recorded nothing are left out)."""
    jobs = [job for job in rec.jobs if job.manifests]
    if rec.kind != "sweep" or not jobs:
        return [Pool(jobs, {}, [], sweep=False)]
    swept = swept_overrides(jobs)
    splitting = [k for k in swept if not poolable(k)]
    groups: dict[str, list[JobRecording]] = {}
    for job in jobs:
        overrides = job.override_values
        key = json.dumps([overrides.get(k) for k in splitting], default=str)
        groups.setdefault(key, []).append(job)
    found = []
    for members in groups.values():
        overrides = members[0].override_values
        fixed = {k: overrides.get(k) for k in splitting}
        varied = [k for k in swept_overrides(members) if poolable(k)]
        found.append(Pool(members, fixed, varied, sweep=True))
    return found
