"""Faults a recording survives: hard kills at random moments, signals (also inside joblib and
submitit workers), a failing task or term, a full or read-only disk, two writers into one dir,
ranks. Each leaves whole lines, no repeated identity and a manifest that says what happened.

The full campaign (50 runs and more) is ``python tests/fault_campaign.py --runs 50``; here a
few runs keep the suite fast.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil
import pytest
from fault_campaign import PRELOAD, campaign, duplicates, read_lines, record, recorder
from hydra_apps.runner import app_command, app_env

from arena_recording.core.format import read_manifest, status_now
from arena_recording.core.session import RecordingIOError, Session, active_session
from arena_recording.core.variations import build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper

GRAVITY = {"gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 15.0}}}
FOREVER = {"num_envs": 4, "num_episodes": 10**7, "flush_every_s": 0.0, "seed": 1}


@pytest.fixture(scope="module")
def ctx():
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def whole(out: Path, name: str = "episodes.jsonl") -> list[dict]:
    """The records of ``out``: every line whole and parsed, seq 0..n-1, no repeated identity."""
    records, torn, problems = read_lines(out / name)
    assert torn == 0 and problems == [] and duplicates(records) == []
    assert [r["seq"] for r in records] == list(range(len(records)))
    return records


def wait_for_records(path: Path, proc_alive, count: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_bytes().count(b"\n") >= count):
        assert proc_alive(), "the writer ended before recording"
        assert time.monotonic() < deadline, f"no record in {path} within {timeout} s"
        time.sleep(0.05)


# hard kills -----------------------------------------------------------------------------------


def test_sigkill_at_random_moments_then_resume_loses_and_repeats_nothing():
    figures = campaign(runs=3, seed=7)
    assert figures.problems == []
    assert figures.kills >= 3 and figures.records_final > 0
    assert figures.records_lost == 0 and figures.duplicates == 0


# signals --------------------------------------------------------------------------------------


def record_with_handler(out: str, keep: bool, done) -> None:
    """A writer whose SIGTERM handler was set before the session (as submitit does)."""
    received = []

    def bypass(signum, frame):
        received.append(signum)

    if keep:
        signal.signal(signal.SIGTERM, bypass)
    plan = {**FOREVER, "num_episodes": 400}
    with contextlib.suppress(SystemExit):
        record(out, plan)
    done.send((received, signal.getsignal(signal.SIGTERM) is (bypass if keep else signal.SIG_DFL)))


@pytest.mark.parametrize("writer_kind", ["thread", "process"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_with_its_default_action_ends_the_recording_interrupted(
    ctx, tmp_path, signum, writer_kind
):
    """A writer process gets the signal too (as a terminal's Ctrl-C sends it to the process
    group); it leaves it to the run, which writes everything through it."""
    writer = ctx.Process(target=record, args=(str(tmp_path), {**FOREVER, "writer": writer_kind}))
    writer.start()
    wait_for_records(tmp_path / "episodes.jsonl", writer.is_alive, count=20)
    children = psutil.Process(writer.pid).children()
    assert len(children) == (writer_kind == "process")
    for child in children:
        child.send_signal(signum)
    os.kill(writer.pid, signum)
    writer.join(60)
    assert writer.exitcode == (128 + signum if signum == signal.SIGTERM else 1)
    records = whole(tmp_path)
    manifest = read_manifest(tmp_path / "manifest.json")
    assert manifest.status == "interrupted" and manifest.counts.episodes == len(records)


def test_a_sigterm_handler_already_set_stays_in_place_and_decides(ctx, tmp_path):
    receive, send = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=record_with_handler, args=(str(tmp_path), True, send))
    writer.start()
    wait_for_records(tmp_path / "episodes.jsonl", writer.is_alive)
    os.kill(writer.pid, signal.SIGTERM)
    time.sleep(0.2)  # two pending signals of one kind are delivered once
    os.kill(writer.pid, signal.SIGTERM)
    assert receive.poll(120)
    received, same_handler = receive.recv()
    writer.join()
    assert received == [signal.SIGTERM] * 2 and same_handler
    assert writer.exitcode == 0
    assert read_manifest(tmp_path / "manifest.json").status == "completed"
    assert len(whole(tmp_path)) == 400


def hydra_sweep(out: Path, launcher: list[str], jobs: int) -> subprocess.Popen:
    seeds = ",".join(map(str, range(jobs)))
    command = app_command(
        "yaml_app.py", "-m", f"seed={seeds}", "+recorder=core", "forever=true",
        f"hydra.sweep.dir={out}", *launcher,
    )  # fmt: skip
    return subprocess.Popen(
        command, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def job_processes(proc: subprocess.Popen, marker: str) -> list[psutil.Process]:
    kids = psutil.Process(proc.pid).children(recursive=True)
    return [k for k in kids if marker in " ".join(k.cmdline())]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_a_joblib_worker_leaves_whole_records_and_an_honest_manifest(tmp_path, signum):
    """joblib's workers return a job's SystemExit or KeyboardInterrupt to the parent, which
    then stops the sweep and kills its workers: the stopped job's manifest says interrupted
    when its worker lived long enough to finish it, else it stays running and readers report
    it crashed once its heartbeat is stale. Either way every line is whole."""
    proc = hydra_sweep(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], jobs=2)
    try:
        for job in ("0", "1"):
            wait_for_records(tmp_path / job / "episodes.jsonl", lambda: proc.poll() is None)
        workers = job_processes(proc, "popen_loky_posix")
        assert len(workers) == 2
        os.kill(workers[0].pid, signum)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    later = datetime.now(UTC) + timedelta(hours=1)
    for job in ("0", "1"):
        records = whole(tmp_path / job)
        manifest = read_manifest(tmp_path / job / "manifest.json")
        assert status_now(manifest, later) in ("interrupted", "crashed"), manifest
        assert manifest.counts.episodes <= len(records)


def test_submitit_keeps_its_sigterm_handler_and_the_job_keeps_recording(tmp_path):
    """submitit sets SIGTERM to bypass (SLURM preemption checkpoints and requeues): the job
    must survive it and keep recording; it then ends as submitit ends it (here SIGINT)."""
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"]
    proc = hydra_sweep(tmp_path, launcher, jobs=1)
    path = tmp_path / "0" / "episodes.jsonl"
    try:
        wait_for_records(path, lambda: proc.poll() is None)
        (job,) = job_processes(proc, "submitit.core._submit")
        job.send_signal(signal.SIGTERM)
        before = path.read_bytes().count(b"\n")
        time.sleep(1.5)
        assert job.is_running() and path.read_bytes().count(b"\n") > before
        assert read_manifest(tmp_path / "0" / "manifest.json").status == "running"
        job.send_signal(signal.SIGINT)
        job.wait(60)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    records = whole(tmp_path / "0")
    manifest = read_manifest(tmp_path / "0" / "manifest.json")
    assert manifest.status == "interrupted" and manifest.counts.episodes == len(records)


# failures mid-run -----------------------------------------------------------------------------


class FailingTerm:
    """A callable-object term that fails on its ``fail_at``-th batch."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch, fail_at: int = 5):
        self.calls += 1
        if self.calls == fail_at:
            raise RuntimeError("term failed on purpose")
        return {"calls": [self.calls] * len(batch)}


def cartpole(seed: int = 0, num_envs: int = 4) -> VariationsWrapper:
    return VariationsWrapper(
        gym.make_vec("CartPole-v1", num_envs, vectorization_mode="sync"),
        build_variations(GRAVITY),
        seed=seed,
    )


@pytest.mark.parametrize("flush_every_s", [0.0, 0.05])
def test_a_failing_task_and_a_failing_term_end_failed_with_whole_records(
    tmp_path, recorder_cfg, flush_every_s
):
    for name, terms in [("task", {}), ("term", {"calls": {"func": FailingTerm()}})]:
        out = tmp_path / name
        cfg = {**recorder_cfg, "terms": {**recorder_cfg["terms"], **terms}}
        failed = pytest.raises(RuntimeError, match="failed on purpose")
        with failed, Session({**cfg, "flush_every_s": flush_every_s}, out):
            env = cartpole()
            env.reset()
            for step in range(400):
                env.step(np.ones(4, dtype=np.int64))
                if name == "task" and step == 300:
                    raise RuntimeError("task failed on purpose")
        assert active_session() is None
        records = whole(out)
        manifest = read_manifest(out / "manifest.json")
        assert manifest.status == "failed" and "failed on purpose" in manifest.error
        assert records and manifest.counts.episodes == len(records)
        if name == "term":
            assert {r["calls"] for r in records} <= {1, 2, 3, 4}
            assert manifest.terms["calls"]["func"] == "test_faults:FailingTerm"


def test_partial_and_callable_object_terms_record_and_describe_themselves(tmp_path, recorder_cfg):
    def scaled(batch, scale: float = 1.0):
        return batch.length.double() * scale

    terms = {
        "scaled": {"func": functools.partial(scaled, scale=2.0)},
        "obj": {"func": FailingTerm(), "params": {"fail_at": -1}},
    }
    cfg = {**recorder_cfg, "terms": {**recorder_cfg["terms"], **terms}}
    with Session(cfg, tmp_path):
        env = cartpole()
        env.reset()
        for _ in range(60):
            env.step(np.ones(4, dtype=np.int64))
        env.close()
    records = whole(tmp_path)
    assert all(r["scaled"] == 2 * r["length"] for r in records)
    described = read_manifest(tmp_path / "manifest.json").terms
    assert described["scaled"]["func"].startswith("functools.partial(test_faults:")
    assert "scale=2.0" in described["scaled"]["func"]


# disks ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[bool]:
    """A small tmpfs at ``path`` (True) where mounting is permitted, else a plain dir (False)."""
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def record_until_full(
    out: str, fsize_limit: int | None, flush_every_s: float, writer: str, result
) -> None:
    if fsize_limit is not None:  # no tmpfs here: a file-size limit fills "the disk" instead
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    try:
        record(out, {**FOREVER, "flush_every_s": flush_every_s, "writer": writer})
        outcome = ("finished", "")
    except Exception as err:  # noqa: BLE001 - sent to the test
        outcome = (type(err).__name__, str(err))
    result.send((*outcome, active_session() is None))


@pytest.mark.parametrize(
    ("flush_every_s", "writer_kind"), [(0.0, "thread"), (0.05, "thread"), (0.05, "process")]
)
def test_a_full_disk_stops_with_one_clear_error_and_damages_nothing(
    ctx, tmp_path, flush_every_s, writer_kind
):
    disk = tmp_path / "disk"
    with tmpfs(disk, "64k") as mounted:
        filler = disk / "filler"
        filler.write_bytes(b"x" * 8192)  # freed later, to resume
        out = disk / "run"
        receive, send = ctx.Pipe(duplex=False)
        limit = None if mounted else 48 * 1024
        args = (str(out), limit, flush_every_s, writer_kind, send)
        writer = ctx.Process(target=record_until_full, args=args)
        writer.start()
        assert receive.poll(120), "the writer never stopped"
        kind, message, deactivated = receive.recv()
        writer.join()
        assert kind == "RecordingIOError" and deactivated
        records = whole(out)
        assert records
        assert f"{len(records)} episode record(s) are safely on disk" in message
        assert ("No space left" if mounted else "File too large") in message
        assert "recorder.resume=true" in message
        manifest = read_manifest(out / "manifest.json")
        said = "says 'failed'" if manifest.status == "failed" else "still says 'running'"
        assert manifest.status in ("failed", "running") and said in message
        assert manifest.counts.episodes <= len(records)
        # space freed: the recording resumes after its last whole record and completes
        filler.unlink()
        done = ctx.Process(target=record, args=(str(out), {**FOREVER, "num_episodes": 4}))
        done.start()
        done.join()
        assert done.exitcode == 0
        assert whole(out)[: len(records)] == records
        assert read_manifest(out / "manifest.json").status == "completed"


def test_a_read_only_dir_is_refused_at_start_and_nothing_is_created(tmp_path, recorder_cfg):
    disk = tmp_path / "ro"
    with tmpfs(disk, "64k", read_only=True) as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("cannot mount a read-only tmpfs, and root writes into any dir")
            disk.chmod(0o555)
        session = Session(recorder_cfg, disk / "run" if not mounted else disk)
        with pytest.raises(RecordingIOError, match="cannot record into"):
            session.start()
        assert active_session() is None and list(disk.iterdir()) == []


def test_a_start_that_cannot_write_its_manifest_leaves_nothing_and_a_retry_works(
    tmp_path, recorder_cfg
):
    disk = tmp_path / "disk"
    with tmpfs(disk, "64k") as mounted:
        if not mounted:
            pytest.skip("needs a tmpfs to fill (mount not permitted here)")
        filler = disk / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            f.write(b"x" * 128 * 1024)  # the disk is now full
        with pytest.raises(OSError, match="No space left"):
            Session(recorder_cfg, disk / "run").start()
        assert active_session() is None and not (disk / "run" / "episodes.jsonl").exists()
        filler.unlink()
        with Session(recorder_cfg, disk / "run"):
            env = cartpole()
            env.reset()
            for _ in range(60):
                env.step(np.ones(4, dtype=np.int64))
            env.close()
        assert whole(disk / "run")


# two writers, ranks ---------------------------------------------------------------------------


def record_at(out: str, plan: dict, go, rank: str | None, result) -> None:
    if rank is not None:
        os.environ["RANK"] = rank
    go.wait()
    try:
        record(out, plan)
        result.send("recorded")
    except FileExistsError as err:
        result.send(f"refused: {err}")


def test_a_writer_process_that_dies_fails_the_run_with_what_is_on_disk(tmp_path):
    """The writer process killed under a running recording: the next flush says so, the run
    ends ``failed``, and every line it wrote before is whole."""
    cfg = {**recorder(0.0, "process"), "resume": False}
    session = Session(cfg, tmp_path).start()
    env = VariationsWrapper(
        gym.make_vec("CartPole-v1", 4, vectorization_mode="sync"), build_variations(GRAVITY)
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    while env.recorder.sink.seq < 10:
        env.step(rng.integers(0, 2, 4))
    process = env.recorder.writer._process
    process.kill()
    process.wait()
    with pytest.raises(RuntimeError, match=r"writer process ended \(exit code -9\)"):
        while True:
            env.step(rng.integers(0, 2, 4))
    with contextlib.suppress(RuntimeError):
        session.finish("failed")
    assert read_manifest(tmp_path / "manifest.json").status == "failed"
    assert len(whole(tmp_path)) >= 10
    assert active_session() is None


@pytest.mark.parametrize("resume", [False, True])
def test_two_processes_into_one_dir_one_records_the_other_is_refused(ctx, tmp_path, resume):
    plan = {**FOREVER, "num_episodes": 200}
    go = ctx.Event()
    pipes = [ctx.Pipe(duplex=False) for _ in range(2)]
    target = record_at if resume else record_at_new
    writers = [
        ctx.Process(target=target, args=(str(tmp_path), plan, go, None, send)) for _, send in pipes
    ]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    go.set()
    outcomes = sorted(receive.recv() for receive, _ in pipes if receive.poll(120))
    for writer in writers:
        writer.join()
    assert len(outcomes) == 2 and outcomes[0] == "recorded", outcomes
    if outcomes[1] != "recorded":  # both started at once: the file was claimed or locked
        reasons = ["already exists"]  # claimed at the same moment, or found there
        if resume:  # or it found the recording and then its writer's lock
            reasons.append("being written by another process")
        assert any(reason in outcomes[1] for reason in reasons), outcomes[1]
    records = whole(tmp_path)
    assert len(records) == 200  # a second writer that came late resumed a completed quota
    assert read_manifest(tmp_path / "manifest.json").status == "completed"


def record_at_new(out: str, plan: dict, go, rank: str | None, result) -> None:
    """``record_at`` without ``recorder.resume`` (a fresh recording must not exist yet)."""
    from arena_recording.core import session as session_module

    cfg = {**recorder(plan["flush_every_s"]), "resume": False}
    go.wait()
    try:
        with session_module.Session(cfg, out):
            env = cartpole(num_envs=plan["num_envs"])
            env.identity.set_quota(plan["num_episodes"])
            env.reset()
            while not env.identity.quota_met():
                env.step(np.ones(env.num_envs, dtype=np.int64))
            env.close()
        result.send("recorded")
    except FileExistsError as err:
        result.send(f"refused: {err}")


def test_ranks_record_side_by_side_into_one_dir(ctx, tmp_path):
    plan = {**FOREVER, "num_episodes": 100}
    go = ctx.Event()
    pipes = [ctx.Pipe(duplex=False) for _ in range(3)]
    writers = [
        ctx.Process(target=record_at, args=(str(tmp_path), plan, go, str(rank), send))
        for rank, (_, send) in enumerate(pipes)
    ]
    for writer in writers:
        writer.start()
    go.set()
    assert [receive.recv() for receive, _ in pipes] == ["recorded"] * 3
    for writer in writers:
        writer.join()
    run_ids = set()
    for rank in range(3):
        records = whole(tmp_path, f"episodes.rank{rank}.jsonl")
        manifest = read_manifest(tmp_path / f"manifest.rank{rank}.json")
        assert len(records) == 100 and manifest.status == "completed" and manifest.rank == rank
        assert {r["rank"] for r in records} == {rank}
        run_ids.add(manifest.run_id)
    assert len(run_ids) == 3


# heartbeat ------------------------------------------------------------------------------------


def test_the_heartbeat_keeps_a_live_writer_running_and_a_dead_one_crashed(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path, heartbeat_s=0.05):
        first = read_manifest(tmp_path / "manifest.json")
        time.sleep(0.3)
        beating = read_manifest(tmp_path / "manifest.json")
        assert beating.updated_at > first.updated_at and status_now(beating) == "running"
    done = read_manifest(tmp_path / "manifest.json")
    assert done.status == "empty"
    silent = datetime.fromisoformat(beating.updated_at) + timedelta(seconds=1)
    assert status_now(beating, silent) == "crashed"
    assert status_now(done, silent + timedelta(days=1)) == "empty"
    legacy = json.loads((tmp_path / "manifest.json").read_text())
    assert legacy["heartbeat_s"] == 0.05


# no side effects outside our scope; seeds -----------------------------------------------------


def test_manifest_writes_read_the_umask_once_and_never_set_it(tmp_path, monkeypatch):
    from arena_recording.core import sinks

    sinks._umask.cache_clear()
    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real(mask))
    for i in range(3):
        sinks.write_json_atomic(tmp_path / "manifest.json", {"i": i})
    assert len(calls) <= 2  # Linux reads it from /proc: no call at all
    mask = real(0o022)
    real(mask)
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_live_callback_count_drops_when_a_callback_is_gone():
    """A reused launcher worker must not count the callback of a job it ran before."""
    import pickle

    from omegaconf import OmegaConf

    from arena_recording.integrations import hydra_callback

    root = OmegaConf.create({"hydra": {"runtime": {"output_dir": "/job"}}})
    callback = pickle.loads(pickle.dumps(hydra_callback.RecorderCallback()))  # as a worker gets it
    assert hydra_callback._require_callback(_root_=root) == "1"
    del callback
    with pytest.raises(RuntimeError, match="no recorder callback runs"):
        hydra_callback._require_callback(_root_=root)


def test_sweep_tables_are_written_only_for_sweeps_that_recorded(tmp_path, recorder_cfg):
    from omegaconf import OmegaConf

    from arena_recording.integrations.hydra_callback import RecorderCallback, sweep_recorded

    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "manifest.json").write_text(json.dumps({"name": "another tool"}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    RecorderCallback().on_multirun_end(config)
    assert not sweep_recorded(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["0", "manifest.json"]
    with Session(recorder_cfg, tmp_path / "1"):
        env = cartpole()
        env.reset()
        for _ in range(40):
            env.step(np.ones(4, dtype=np.int64))
        env.close()
    assert sweep_recorded(tmp_path)


def gravity_values(out: Path, *, seed: int | None, reset_seed: int | None) -> tuple[list, dict]:
    with Session({**CORE, "resume": True}, out) as session:
        env = cartpole(seed=seed) if seed is not None else cartpole_unseeded()
        env.reset(seed=reset_seed)
        for _ in range(60):
            env.step(np.ones(4, dtype=np.int64))
        env.close()
        derived = session.derived_seed
    records = whole(out)
    return [(r["env_id"], r["episode_in_env"], r["variations"]["gravity"]) for r in records], {
        "derived": derived,
        "recorded": {r["seed"] for r in records},
        "manifest": [env.seed for env in read_manifest(out / "manifest.json").envs],
    }


CORE = {
    "terms": {
        "core": {"func": "arena_recording.core.terms:core"},
        "variations": {"func": "arena_recording.core.terms:variations"},
    }
}


def cartpole_unseeded() -> VariationsWrapper:
    return VariationsWrapper(
        gym.make_vec("CartPole-v1", 4, vectorization_mode="sync"), build_variations(GRAVITY)
    )


def test_reset_seed_is_honoured_when_no_seed_is_given(tmp_path):
    from_reset, seeds = gravity_values(tmp_path / "a", seed=None, reset_seed=5)
    from_constructor, _ = gravity_values(tmp_path / "b", seed=5, reset_seed=None)
    other, _ = gravity_values(tmp_path / "c", seed=None, reset_seed=6)
    by_episode = [
        {(env, ep): v for env, ep, v in run} for run in (from_reset, from_constructor, other)
    ]
    common = by_episode[0].keys() & by_episode[1].keys() & by_episode[2].keys()
    assert len(common) >= 4
    assert all(by_episode[0][k] == by_episode[1][k] != by_episode[2][k] for k in common)
    assert seeds["recorded"] == {5} and seeds["manifest"] == [5]


def test_a_missing_seed_is_derived_from_the_run_id_and_kept_by_a_resume(tmp_path):
    first, seeds = gravity_values(tmp_path, seed=None, reset_seed=None)
    assert seeds["recorded"] == {seeds["derived"]} and seeds["manifest"] == [seeds["derived"]]
    both, again = gravity_values(tmp_path, seed=None, reset_seed=None)  # resumed: same run id
    assert again["derived"] == seeds["derived"] and again["manifest"] == [seeds["derived"]] * 2
    assert both[: len(first)] == first and len(both) > len(first)
    other, _ = gravity_values(tmp_path / "other", seed=None, reset_seed=None)
    assert [v for *_, v in other[:4]] != [v for *_, v in first[:4]]  # another run, another seed
