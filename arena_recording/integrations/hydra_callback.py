"""Hydra adapter: a callback that records every job whose config has a ``recorder`` node.

Installing the package is enough: the search-path plugin makes the ``recorder`` config group
visible and registers ``RecorderCallback`` for every app, so recording is switched on from the
command line::

    python eval.py +recorder=default                  # core + variations
    python eval.py +recorder=core recorder.fsync=true
    python eval.py +recorder=default \\
        '+recorder.terms.final_x={func: my_pkg.metrics:final_x, params: {axis: 0}}'
    python eval.py -m seed=0,1,2 +recorder=default    # one recording per job dir
    python eval.py -m +recorder=core,variations       # sweeping the group records too

The task builds its variations from config inside the job, after the callback started the
session, so every draw is heard::

    @hydra.main(config_path="conf", config_name="eval", version_base="1.3")
    def main(cfg):
        variations = variations_from_config(cfg.variations)
        env = VariationsWrapper(gym.make_vec("CartPole-v1", 8, vectorization_mode="sync"), variations, seed=cfg.seed)
        ...

Per job, ``on_job_start`` checks the config and starts a ``Session`` writing ``episodes.jsonl``
and ``manifest.json`` into ``hydra.runtime.output_dir``; ``on_job_end`` finishes it as
completed or failed. Ctrl-C and SIGTERM skip ``on_job_end``; the session then finishes its
manifest as interrupted on exit. ``on_multirun_end`` writes the sweep table
(``arena_recording.analysis.sweeps``; ``arena-recording merge SWEEP_DIR`` does the same by hand).
With ``recorder.report=true`` both also write an HTML report (``arena_recording.analysis.report``;
``arena-recording report DIR`` by hand).

Hydra turns exceptions raised in callbacks into warnings and runs the task anyway. A job that
asks for a recording it cannot make must not run silently unrecorded, so configuration errors
(an unknown term function, params that do not fit it, an invalid variation, an existing
recording in the output dir) raise ``RecorderStartError``, a ``SystemExit`` that names the
config key and stops the process.

Only a ``recorder`` node of type ``RecorderCfg`` (what ``recorder/*.yaml`` produce) switches
recording on; an app's unrelated ``recorder`` key is left alone. Configs are the dataclasses of
``arena_recording.core.config``. An app whose primary config is a dataclass (or a hydra-zen
``make_config``) declares the field, which ``+recorder=default`` fills, and types its
variations so that Hydra checks them while composing::

    @dataclass
    class EvalConf:
        seed: int = 0
        recorder: RecorderCfg | None = None
        variations: dict[str, VariationCfg] = field(default_factory=dict)

hydra-zen apps (``zen(task).hydra_main``, ``launch``) record the same way. A custom term can be
a stored hydra-zen config, so its params are checked against the function while composing::

    FinalX = builds(final_x, populate_full_signature=True, zen_partial=True, zen_exclude=["batch"])
    store(TermCfg(func=FinalX(axis=0)), group="recorder/terms", name="final_x",
          package="recorder.terms.final_x")     # +recorder=default +recorder/terms=final_x

hydra-zen turns a dataclass instance in a default (``make_config``, ``builds``, a stored
dataclass type) into a ``builds`` of its class, which is not a ``VariationCfg`` or
``RecorderCfg`` node: give typed fields plain-data defaults (``{}``, ``None``, a stored group
option), or store an instance of a plain dataclass.

Variations are validated at job start wherever they sit under a key named ``variations``
(``variations.gravity``, ``env.variations.cube.mass``): a mapping of key to spec, or a list of
specs. Unknown keys and dotted keys are checked like the rest; errors name the config path.
"""

from __future__ import annotations

import gc
import logging
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from arena_recording.core.config import RecorderCfg, recorder_cfg, variation_cfgs
from arena_recording.core.format import MANIFEST_GLOB, FormatError, read_manifest
from arena_recording.errors import ConfigError
from arena_recording.integrations.isaaclab_entry import DeferredRecording, defer_to_env

if TYPE_CHECKING:
    from arena_recording.core.session import Session
    from arena_recording.core.variations import VariationBase

log = logging.getLogger(__name__)

REQUIRE_CALLBACK_RESOLVER = "arena_recording.require_callback"
_live_callbacks: weakref.WeakSet[RecorderCallback] = weakref.WeakSet()
"""RecorderCallback objects alive in this process (built here or unpickled for a job); one
that is gone leaves the set, so a reused launcher worker does not count past jobs' callbacks."""


class RecorderStartError(SystemExit):
    """Recording was asked for and cannot start; stops the process (Hydra swallows exceptions
    from callbacks, and a job must never run unrecorded when recording was requested)."""


class RecorderFinishError(SystemExit):
    """The recording could not be written to the end (a full or read-only disk); stops the
    process with the message that says how many episodes are safely on disk."""


def recorder_node(config: DictConfig) -> DictConfig | None:
    """The job's ``recorder`` node when it switches recording on, else ``None``."""
    node = OmegaConf.select(config, "recorder", default=None)
    if not isinstance(node, DictConfig):
        return None
    if OmegaConf.get_type(node) is RecorderCfg:
        return node
    if isinstance(node.get("terms"), DictConfig):
        log.warning(
            "the `recorder` node is not an arena-recording RecorderCfg, so nothing is recorded; "
            "select it with +recorder=default, or extend /arena_recording/schema/recorder"
        )
    return None


def _variation_keys(node: Any, keys: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """Key paths of the ``variations`` nodes that hold variation specs (a mapping of key to a
    spec with a ``sampler``, or a list of such specs) in ``node``, a plain container: walking
    it never resolves or trips over the rest of the config, and keys stay whole (``cube.mass``)."""
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in children:
        if not keys and key in ("hydra", "recorder"):
            continue
        if not isinstance(child, dict | list):
            continue
        specs = child.values() if isinstance(child, dict) else child
        if key == "variations" and any(isinstance(s, dict) and "sampler" in s for s in specs):
            yield (*keys, key)
        else:
            yield from _variation_keys(child, (*keys, key))


def _config_path(keys: tuple[Any, ...]) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")


def variation_nodes(config: DictConfig) -> Iterator[tuple[str, Any]]:
    """(config path, resolved plain specs) of every ``variations`` node of the job config."""
    plain = OmegaConf.to_container(config, resolve=False)
    for keys in _variation_keys(plain, ()):
        node: Any = config
        for key in keys:
            node = node[key]
        yield _config_path(keys), OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def check_variations(config: DictConfig) -> None:
    """Validate every variation under a ``variations`` key; errors name the config path."""
    for path, specs in variation_nodes(config):
        variation_cfgs(specs, path)


def variations_from_config(node: Any, path: str = "variations") -> list[VariationBase]:
    """Live variations from a ``variations`` config node (a mapping of key to spec, or a list)
    at config path ``path``. Build them inside the task: while a session is active they
    subscribe to it."""
    from arena_recording.core.variations import build_variations

    if node is None:
        return []
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return build_variations(node, path)


def job_info(config: DictConfig) -> dict[str, Any]:
    """What the manifest keeps of the Hydra job: overrides, number, sweep dir, choices."""
    hydra = config.hydra
    multirun = OmegaConf.select(hydra, "mode", default=None) == RunMode.MULTIRUN
    return {
        "name": OmegaConf.select(hydra, "job.name", default=None),
        "num": OmegaConf.select(hydra, "job.num", default=None) if multirun else None,
        "id": OmegaConf.select(hydra, "job.id", default=None),
        "overrides": list(OmegaConf.to_container(hydra.overrides.task)),
        "sweep_dir": str(Path(str(hydra.sweep.dir)).absolute()) if multirun else None,
        "output_dir": str(hydra.runtime.output_dir),
        "config_name": OmegaConf.select(hydra, "job.config_name", default=None),
        "choices": OmegaConf.to_container(hydra.runtime.choices),
        # how the app was launched, for ``arena-recording rerun``
        "argv": list(sys.argv),
        "module": getattr(sys.modules["__main__"].__spec__, "name", None),
        "cwd": OmegaConf.select(hydra, "runtime.cwd", default=None),
    }


def start_session(config: DictConfig) -> Session | None:
    """Check the job config and start its session; ``None`` when it does not record."""
    node = recorder_node(config)
    if node is None:
        return None
    from arena_recording.core.session import Session

    plain = OmegaConf.to_container(node, resolve=True, throw_on_missing=True, enum_to_str=True)
    recorder = recorder_cfg(plain)
    check_variations(config)
    session = Session(recorder, config.hydra.runtime.output_dir, job=job_info(config))
    return session.start()


class RecorderCallback(Callback):
    """Starts a recording session per job and finishes it with the job's status."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._deferred: DeferredRecording | None = None
        _live_callbacks.add(self)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None, "_deferred": None}  # sessions hold open files

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _live_callbacks.add(self)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        _finish_stale_session()
        try:
            self._session = start_session(config)
            # Isaac Lab's entry points compose in the job and build the env after it ends
            task_function = kwargs.get("task_function")
            self._deferred = defer_to_env(self._session, config, task_function, _write_report)
        except Exception as err:
            output_dir = OmegaConf.select(config, "hydra.runtime.output_dir", default="?")
            reason = (
                f"config key {err.key}: {err.message}"
                if isinstance(err, ConfigError)
                else f"{type(err).__name__}: {err}"
            )
            raise RecorderStartError(
                f"arena-recording: cannot record the job in {output_dir}: {reason}"
            ) from err

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        session, self._session = self._session, None
        deferred, self._deferred = self._deferred, None
        if session is None:
            return
        if deferred is not None and job_return.status != JobStatus.FAILED:
            deferred.record_env()  # the session stays open until the env built after it closes
            return
        from arena_recording.core.session import RecordingIOError

        try:
            if job_return.status == JobStatus.FAILED:
                # ``return_value`` re-raises the task's exception; the stored one is the error.
                session.finish("failed", job_return._return_value)
            else:
                session.finish("completed")
        except RecordingIOError as err:
            log.error("%s", err)
            raise RecorderFinishError(str(err)) from None
        if session.cfg.report:
            _write_report(session.output_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The sweep table, for sweeps whose jobs recorded (a manifest of ours in a job dir);
        any other app's sweep dir is left alone."""
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        if sweep_recorded(sweep_dir):
            from arena_recording.analysis.sweeps import merge_sweep

            table = merge_sweep(sweep_dir)
            manifests = (m for job in table.jobs for m in job.manifests)
            if any(m.config.get("report") for m in manifests):
                _write_report(sweep_dir)


def _write_report(path: Path) -> None:
    """``recorder.report=true``: the HTML report; a failure is logged and never fails the job."""
    try:
        from arena_recording.analysis.report import write_report

        log.info("arena-recording: report written to %s", write_report(path))
    except ImportError as err:
        log.warning(
            "arena-recording: recorder.report=true needs the analysis extra "
            "(pip install 'arena-recording[analysis]'): %s",
            err,
        )
    except Exception:
        log.exception("arena-recording: could not write the report of %s", path)


def _finish_stale_session() -> None:
    """A launcher worker that caught a job's ``SystemExit`` or ``KeyboardInterrupt`` (joblib's
    loky workers return it to the parent and take the next job) skipped that job's
    ``on_job_end``: its session is still active here. It ends as interrupted."""
    session_module = sys.modules.get("arena_recording.core.session")  # none: nothing active
    stale = session_module.active_session() if session_module is not None else None
    if stale is not None:
        log.warning(
            "arena-recording: the previous job in this process was stopped; its "
            "recording in %s ends as interrupted",
            stale.output_dir,
        )
        stale.finish("interrupted", "the job was stopped before it ended (a signal)")


def sweep_recorded(sweep_dir: Path) -> bool:
    """Whether a job of the sweep in ``sweep_dir`` recorded: a manifest there says
    ``producer: arena-recording`` (another tool's ``manifest.json`` does not count)."""
    if not sweep_dir.is_dir():
        return False
    for path in sweep_dir.rglob(MANIFEST_GLOB):
        try:
            read_manifest(path)
        except (FormatError, OSError):
            continue
        return True
    return False


def _require_callback(*, _root_: DictConfig) -> str:
    """``${arena_recording.require_callback:}`` in ``hydra.job.env_set``: Hydra resolves it in
    the job's process just before ``on_job_start``. No callback there means that nothing would
    be recorded, which happens when the recorder group is swept and the environment default
    that registers the callback (``hydra/env=default``) was replaced: fail instead."""
    in_job = OmegaConf.select(_root_, "hydra.runtime.output_dir", default=None) is not None
    if in_job and _live_callbacks:
        gc.collect()  # a past job's callback kept only by a reference cycle is not alive
    if in_job and not _live_callbacks:
        raise RuntimeError(
            "arena-recording: this job has a recorder config but no recorder callback runs in "
            "it, so nothing would be recorded. Hydra builds callbacks from the master config, "
            "which leaves out swept config groups (-m +recorder=a,b), and the environment "
            "default that registers the callback (hydra/env=default) is not in use. Add "
            "'++hydra.callbacks.arena_recording._target_=arena_recording.integrations.hydra_callback.RecorderCallback'"
            " to the command line."
        )
    return "1"


def register_resolvers() -> None:
    """Register the OmegaConf resolvers the YAML options use (idempotent)."""
    if not OmegaConf.has_resolver(REQUIRE_CALLBACK_RESOLVER):
        OmegaConf.register_new_resolver(REQUIRE_CALLBACK_RESOLVER, _require_callback)
