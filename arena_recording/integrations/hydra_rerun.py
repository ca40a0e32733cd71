"""Rerun: the Hydra command that replays a recording's selected episodes.

A recorded job's manifest says how its app was launched (the module or script, its flags and
Hydra overrides, the working dir); the command launches it again with those overrides and
``+recorder=replay`` pointed at the recording (``arena_recording.core.replay``), so exactly
the selected episodes run again, each with the factor values it ran with.

Example::

    for command in rerun_commands("outputs/sweep", where="success == false"):
        print(command)   # cd /work && python -m app seed=3 +recorder=replay recorder.replay...
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arena_recording.analysis.load import load
from arena_recording.core.format import JobInfo
from arena_recording.core.replay import PATH, select
from arena_recording.integrations.hydra_catalog import override_value

_REPLAY_OPTION = "replay"


def _is_override(token: str) -> bool:
    return token.startswith("~") or ("=" in token and not token.startswith("-"))


def _recorder_override(override: str) -> bool:
    """The overrides a replay sets itself: the recorder option and its replay block."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "recorder" or key.startswith(("recorder.replay", "recorder.resume"))


@dataclass
class RerunCommand:
    """One command that replays the selected episodes of one recorded job, run from ``cwd``."""

    argv: list[str]
    cwd: str | None

    def __str__(self) -> str:
        command = shlex.join(self.argv)
        return f"cd {shlex.quote(self.cwd)} && {command}" if self.cwd else command


def rerun_command(
    job: JobInfo,
    source: Path,
    where: str | None,
    episodes: Sequence[int] | None,
    python: str = sys.executable,
) -> RerunCommand:
    """The command that launches ``job``'s app again with its overrides and replays the
    episodes of ``source`` that ``where`` and ``episodes`` select."""
    if not job.argv:
        raise ValueError(
            f"the manifest of {source} does not say how its app was launched; run the app with "
            f"+recorder=replay recorder.replay.source={source} and the overrides {job.overrides}"
        )
    launch = [python, "-m", job.module] if job.module else [python, job.argv[0]]
    flags = [t for t in job.argv[1:] if not _is_override(t) and t not in ("-m", "--multirun")]
    overrides = [o for o in job.overrides if not _recorder_override(o)]
    appended = any(o.split("=", 1)[0] == "+recorder" for o in job.overrides)
    option = "+recorder" if appended or "recorder" not in job.choices else "recorder"
    replay = [f"{option}={_REPLAY_OPTION}", f"{PATH}.source={override_value(str(source))}"]
    if where:
        replay.append(f"{PATH}.where={override_value(where)}")
    if episodes is not None:
        replay.append(f"{PATH}.episodes=[{','.join(str(int(e)) for e in episodes)}]")
    return RerunCommand([*launch, *flags, *overrides, *replay], job.cwd)


def rerun_commands(
    path: str | Path, where: str | None = None, episodes: Sequence[int] | None = None
) -> list[RerunCommand]:
    """The commands that replay the episodes of a run dir, sweep dir or records file that
    ``where`` and ``episodes`` select: one per recorded job (a sweep's jobs each replay their
    own episodes, named by id)."""
    recording = load(path)
    frame = select(recording.episodes, where, episodes, path="--where")
    if frame.empty:
        raise ValueError(f"the selection picks none of the {len(recording.episodes)} episodes")
    if recording.kind != "sweep":
        return [rerun_command(recording.manifests[0].job, recording.path, where, episodes)]
    commands = []
    for job in recording.jobs:
        runs = {m.run_id for m in job.manifests}
        ids = frame.loc[frame["run_id"].isin(runs), "episode_id"].astype(int).tolist()
        if ids:
            commands.append(rerun_command(job.manifests[0].job, job.dir, None, ids))
    return commands
