"""Isaac Lab's own entry points record the env they build.

Isaac Lab 3.0's ``isaaclab_tasks.utils.resolve_task_config`` (also behind ``parse_env_cfg``
and the ``isaaclab_rl`` train and play entry points) runs ``hydra.main`` only to compose the
env and agent configs, and returns them; the env is built and stepped after the Hydra job has
ended. A session bracketing the job would finish before the env exists, with 0 episodes.

So the recorder callback asks ``defer_to_env`` at job start whether the job is that flow: its
task function is the compose function nested in ``resolve_task_config``, whose ``env_cfg``
parameter defaults to the config object being composed. Then:

- at job end (``DeferredRecording.record_env``), the composed env cfg is instrumented
  (``isaaclab_recording.instrument``) and the session stays open past the job;
- the env built from that cfg records its episodes; when it closes, the session finishes;
- at process exit, a session still open finishes too: ``empty`` (with a warning) if no env was
  built from the cfg; else the running episodes end as aborted records and the session is
  ``failed`` if the process is dying of an uncaught exception, else ``interrupted`` (the env
  was never closed: SIGTERM, or a script that just ends).

Where the flow cannot record, the job stops at start with a message that says what to do:
a multirun (``-m``; the compose function returns one config, the last) or an env cfg that is
not a ``ManagerBasedRLEnvCfg`` / ``DirectRLEnvCfg`` object.

Usage, unchanged Isaac Lab scripts::

    python scripts/reinforcement_learning/rsl_rl/play.py --task Isaac-Ant +recorder=default

and the same in a script of one's own::

    env_cfg, agent_cfg = resolve_task_config("Isaac-Ant", "rsl_rl_cfg_entry_point")  # reads sys.argv
    env = gym.make("Isaac-Ant", cfg=env_cfg)   # records; closing it finishes the recording
"""

from __future__ import annotations

import atexit
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from arena_recording.errors import ConfigError

if TYPE_CHECKING:
    from arena_recording.core.session import Session

log = logging.getLogger(__name__)

COMPOSE_MODULE = "isaaclab_tasks.utils.hydra"
"""The module of ``resolve_task_config``; imported by the app itself when it is that flow."""


def composed_env_cfg(task_function: Callable[..., Any] | None) -> Any | None:
    """The env cfg that Isaac Lab's compose-only flow is composing, ``None`` for any other job.

    The task function is that flow's when its code is the function nested in
    ``resolve_task_config`` (compared by identity, never by name).
    """
    module = sys.modules.get(COMPOSE_MODULE)
    code = getattr(task_function, "__code__", None)
    if module is None or code is None:
        return None
    if code not in module.resolve_task_config.__code__.co_consts:
        return None
    parameter = inspect.signature(task_function).parameters.get("env_cfg")
    return None if parameter is None else parameter.default


class DeferredRecording:
    """A session kept open past its Hydra job, for the env built from ``env_cfg``."""

    def __init__(
        self, session: Session, env_cfg: Any, write_report: Callable[[Path], None]
    ) -> None:
        self.session = session
        self.env_cfg = env_cfg
        self.write_report = write_report

    def record_env(self) -> None:
        """The job ended: instrument the composed cfg and keep the session open."""
        from arena_recording.integrations.isaaclab_recording import instrument

        instrument(self.env_cfg, finish_session=True)
        atexit.register(self.at_exit)
        log.info(
            "arena-recording: Isaac Lab composed the env cfg; the env built from it records "
            "into %s until it closes",
            self.session.output_dir,
        )

    def at_exit(self) -> None:
        """Finish a session still open at process exit (the env never built or never closed)."""
        from arena_recording.integrations.isaaclab_recording import live_recordings

        if self.session.status != "running":
            self.finished()
            return
        recordings = live_recordings(self.session)
        for recording in recordings:
            recording.finish_session = False
            recording.detach()
        dying = getattr(sys, "last_value", None)  # set for an uncaught exception
        if dying is not None:
            self.session.finish("failed", dying)
        elif recordings:
            self.session.finish("interrupted", "the process exited before the env was closed")
        else:
            log.warning(
                "arena-recording: Isaac Lab's entry point composed an env cfg with recording "
                "on, but no env was built from it"
            )
            self.session.finish("completed")  # with 0 episodes: empty
        self.finished()

    def finished(self) -> None:
        """The session has finished: its report, if asked for."""
        if self.session.cfg.report:
            self.write_report(self.session.output_dir)


def defer_to_env(
    session: Session | None,
    config: DictConfig,
    task_function: Callable[..., Any] | None,
    write_report: Callable[[Path], None],
) -> DeferredRecording | None:
    """For Isaac Lab's compose-only flow, the ``DeferredRecording`` of ``session``; else None.

    ``write_report(output_dir)`` runs when the session finishes if ``recorder.report`` is set.

    A flow that cannot record finishes ``session`` as failed and raises a ``ConfigError``
    that says what to do (the recorder callback stops the process with it).
    """
    if session is None:
        return None
    env_cfg = composed_env_cfg(task_function)
    if env_cfg is None:
        return None
    from arena_recording.integrations.isaaclab_recording import supports_recording

    problem = None
    if OmegaConf.select(config, "hydra.mode", default=None) == RunMode.MULTIRUN:
        problem = (
            "Isaac Lab's resolve_task_config composes one env cfg and builds the env after "
            "Hydra returns, so a multirun (-m) cannot record one env per job. Run one job per "
            "process, or sweep with arena-recording's own runner"
        )
    elif not supports_recording(env_cfg):
        problem = (
            f"Isaac Lab composed a {type(env_cfg).__name__}; only ManagerBasedRLEnvCfg and "
            "DirectRLEnvCfg envs record. Record without +recorder: build the env from "
            "arena_recording.integrations.isaaclab_recording.instrument(env_cfg) inside a "
            "Session"
        )
    if problem is not None:
        session.finish("failed", problem)
        raise ConfigError("recorder", problem)
    return DeferredRecording(session, env_cfg, write_report)
