"""Recorder, terms, sinks and session, driven the way an env adapter drives them."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime

import numpy as np
import pytest
import torch
from conftest import read_records

from arena_recording.core.config import ChoiceCfg, NormalCfg, UniformCfg
from arena_recording.core.encoding import EncodeError
from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.recorder import DrawError
from arena_recording.core.session import Session, active_session
from arena_recording.core.sinks import JsonlSink
from arena_recording.core.terms import EpisodeBatch
from arena_recording.core.variations import VariationBase, VariationCfg
from arena_recording.errors import ConfigError

SEED = 11


@pytest.fixture(params=["thread", "process"])
def recorder_cfg(request, recorder_cfg):
    """Every test here runs with the writer on a thread and in a child process."""
    return {**recorder_cfg, "writer": request.param}


class Adapter:
    """A minimal env adapter: the reset ordering of every real one, without an env."""

    def __init__(self, session, variations, num_envs=4, num_episodes=None):
        self.identity = EpisodeIdentity(num_envs, num_episodes=num_episodes)
        self.variations = variations
        self.recorder = session.bind(
            self.identity, seed=SEED, termination_names=("goal", "fall"), variations=variations
        )
        self.lengths = torch.zeros(num_envs, dtype=torch.long)
        for v in variations:
            if v.scope == "build":
                v.sample(torch.arange(num_envs), seed=SEED)

    def reset(self, env_ids, terminated=None, termination=None):
        env_ids = torch.as_tensor(env_ids)
        k = len(env_ids)
        term = (
            torch.zeros(k, dtype=torch.bool) if terminated is None else torch.as_tensor(terminated)
        )
        self.recorder.close(
            EpisodeEnd(
                env_ids=env_ids,
                length=self.lengths[env_ids].clone(),
                terminated=term,
                truncated=~term,
                termination=torch.full((k,), 0 if termination is None else termination),
                success=term,
            )
        )
        self.identity.advance(env_ids, started=self.lengths[env_ids] > 0)
        self.lengths[env_ids] = 0
        for v in self.variations:
            if v.scope == "episode":
                v.sample(env_ids, seed=SEED, episode_in_env=self.identity.episode_in_env[env_ids])

    def step(self, n=1):
        self.lengths += n


def make(key, scope="episode", sampler=None):
    return VariationBase(
        VariationCfg(key=key, sampler=sampler or UniformCfg(low=0.0, high=1.0), scope=scope)
    )


def test_reset_ordering_zero_step_episodes_and_attribution(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path) as session:
        mass, size = make("mass"), make("size", scope="build")
        adapter = Adapter(session, [mass, size])
        adapter.reset(range(4))  # initial reset: no records
        first = mass.cfg.sampler.build("mass").sample(
            torch.arange(4), seed=SEED, episode_in_env=torch.zeros(4, dtype=torch.long)
        )
        adapter.reset(range(4))  # a second reset before any step reuses the identities
        adapter.step(5)
        adapter.reset([1, 3], terminated=[True, False])
        adapter.step(2)
        adapter.reset(range(4))
    records = read_records(tmp_path / "episodes.jsonl")
    assert [(r["env_id"], r["episode_in_env"], r["length"]) for r in records] == [
        (1, 0, 5),
        (3, 0, 5),
        (0, 0, 7),
        (1, 1, 2),
        (2, 0, 7),
        (3, 1, 2),
    ]
    assert [r["seq"] for r in records] == list(range(6))
    assert len({r["episode_id"] for r in records}) == 6
    by_env = {r["env_id"]: r for r in records if r["episode_in_env"] == 0}
    for env in range(4):  # episode 0 ran with the values drawn for (env, episode 0)
        assert by_env[env]["variations"]["mass"] == pytest.approx(float(first[env]))
    sizes = {r["env_id"]: r["variations"]["size"] for r in records}
    assert all(r["variations"]["size"] == sizes[r["env_id"]] for r in records)
    assert records[0]["status"] == "terminated" and records[0]["success"] is True
    assert records[0]["termination"] == "goal" and records[1]["status"] == "truncated"
    assert records[0]["start_time"].endswith("+00:00")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["counts"]["episodes"] == 6 and manifest["counts"]["resets_without_steps"] == 8
    assert [f["key"] for f in manifest["factors"]] == ["mass", "size"]


DRAWN_TWICE = r"'object.friction' was drawn twice for env 2 in its episode 1"


@pytest.mark.parametrize("flush_every_s", [0.0, 1.0])
def test_second_episode_draw_is_an_error_naming_variation_env_and_episode(
    tmp_path, recorder_cfg, flush_every_s
):
    """Draws are checked when they are flushed: an open episode's at the end of the session."""
    recorder_cfg["flush_every_s"] = flush_every_s
    with pytest.raises(DrawError, match=DRAWN_TWICE), Session(recorder_cfg, tmp_path) as session:
        friction = make("object.friction")
        adapter = Adapter(session, [friction])
        adapter.reset(range(4))
        adapter.step()
        adapter.reset([2])
        friction.sample(torch.tensor([2]), seed=SEED, episode_in_env=torch.tensor([1]))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "DrawError" in manifest["error"]


def test_second_draw_in_a_closed_episode_fails_the_flush_that_writes_it(tmp_path, recorder_cfg):
    recorder_cfg["flush_every_s"] = 0  # a flush at every reset batch
    session = Session(recorder_cfg, tmp_path).start()
    friction = make("object.friction")
    adapter = Adapter(session, [friction])
    adapter.reset(range(4))
    adapter.step()
    adapter.reset([2])
    friction.sample(torch.tensor([2]), seed=SEED, episode_in_env=torch.tensor([1]))
    adapter.step()
    with pytest.raises(DrawError, match=DRAWN_TWICE):
        adapter.reset([2])
    session.finish("failed", "test")


def test_a_failed_background_flush_surfaces_and_the_session_still_ends(tmp_path, recorder_cfg):
    recorder_cfg["flush_every_s"] = 0.01
    session = Session(recorder_cfg, tmp_path).start()
    friction = make("object.friction")
    adapter = Adapter(session, [friction])
    adapter.reset(range(4))
    adapter.step()
    adapter.reset([2])
    friction.sample(torch.tensor([2]), seed=SEED, episode_in_env=torch.tensor([1]))
    with pytest.raises(DrawError, match=DRAWN_TWICE):
        for _ in range(500):  # flushes go on after the failing one until it is raised here
            adapter.step()
            adapter.reset(range(4))
            time.sleep(0.002)
    with pytest.raises(RuntimeError, match="an earlier flush failed"):
        session.finish("failed", "test")
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "failed"


def test_interval_draws_belong_to_their_episode_and_are_evicted(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path) as session:
        push = make("push", scope="interval")
        adapter = Adapter(session, [make("mass"), push])
        adapter.reset(range(4))
        for step in range(3):
            adapter.step()
            ids = torch.tensor([0, 1])
            push.sample(
                ids, seed=SEED, episode_in_env=torch.zeros(2, dtype=torch.long), step=step + 1
            )
        adapter.reset([0, 1, 2, 3])
        adapter.step()
        push.sample(torch.tensor([1]), seed=SEED, episode_in_env=torch.ones(1).long(), step=1)
        adapter.recorder.flush()
        adapter.recorder._thread.drain()
        _, open_ = adapter.recorder.writer.peek(np.arange(4))
        assert [len(p) for p in open_["push"]] == [0, 1, 0, 0]  # only the open episode's draw
        assert None not in open_["mass"]  # the next episodes' draws
        adapter.reset([0, 1])
    records = read_records(tmp_path / "episodes.jsonl")
    pushes = [r["variations"]["push"] for r in records]
    assert [[p["step"] for p in row] for row in pushes] == [[1, 2, 3], [1, 2, 3], [], [], [], [1]]


def test_quota_records_exactly_num_episodes(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path) as session:
        adapter = Adapter(session, [make("mass")], num_envs=4, num_episodes=10)
        adapter.reset(range(4))
        rounds = 0
        while not adapter.identity.quota_met():
            adapter.step()
            adapter.reset([rounds % 4, (rounds + 1) % 4])
            rounds += 1
    records = read_records(tmp_path / "episodes.jsonl")
    per_env = np.bincount([r["env_id"] for r in records], minlength=4)
    assert len(records) == 10 and per_env.tolist() == [3, 3, 2, 2]


def final_x(batch: EpisodeBatch, axis: int = 0, scale: float = 1.0) -> dict:
    return {
        "final_x": batch.env_ids.double() * scale + axis,
        "tags": {"odd": batch.env_ids % 2 == 1},
    }


def nan_term(batch: EpisodeBatch) -> torch.Tensor:
    return torch.full((len(batch),), math.nan)


def host_fields(batch: EpisodeBatch) -> dict:
    """A custom term that reads the batch's host-side fields (the recorder flushes for them)."""
    return {
        "seen_termination": batch.termination,
        "seen_start": batch.start_time.tolist(),
        "seen_mass": batch.variations["mass"],
    }


@pytest.mark.parametrize("flush_every_s", [0.0, 1.0])
def test_custom_terms_see_host_fields_as_the_records_have_them(
    tmp_path, recorder_cfg, flush_every_s
):
    recorder_cfg["terms"]["seen"] = {"func": host_fields}
    recorder_cfg["flush_every_s"] = flush_every_s
    with Session(recorder_cfg, tmp_path) as session:
        adapter = Adapter(session, [make("mass")])
        adapter.reset(range(4))
        adapter.step(3)
        adapter.reset([0, 2], terminated=[True, False], termination=1)
        adapter.step(2)
        adapter.reset(range(4))
    records = read_records(tmp_path / "episodes.jsonl")
    assert len(records) == 6
    for r in records:
        assert r["seen_termination"] == r["termination"]
        assert r["seen_mass"] == r["variations"]["mass"] is not None
        start = datetime.fromisoformat(r["start_time"]).timestamp()
        assert r["seen_start"] == pytest.approx(start, abs=1e-6)


def test_custom_terms_and_non_finite_values(tmp_path, recorder_cfg):
    recorder_cfg["terms"]["x"] = {"func": "test_recorder:final_x", "params": {"scale": 2.0}}
    recorder_cfg["terms"]["score"] = {"func": nan_term}
    with Session(recorder_cfg, tmp_path) as session:
        adapter = Adapter(
            session,
            [
                make("mass", sampler=NormalCfg(mean=0.0, std=1.0)),
                make("color", sampler=ChoiceCfg(choices=["red", "blue"])),
            ],
        )
        adapter.reset(range(4))
        adapter.step()
        adapter.reset(range(4))
    records = read_records(tmp_path / "episodes.jsonl")
    assert [r["final_x"] for r in records] == [0.0, 2.0, 4.0, 6.0]
    assert [r["tags"]["odd"] for r in records] == [False, True, False, True]
    assert all(r["score"] is None for r in records)  # NaN is written as null
    assert {r["variations"]["color"] for r in records} <= {"red", "blue"}
    assert "NaN" not in (tmp_path / "episodes.jsonl").read_text()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["terms"]["x"] == {"func": "test_recorder:final_x", "params": {"scale": 2.0}}


@pytest.mark.parametrize(
    ("term", "message"),
    [
        (
            {"func": "no_such_pkg.metrics:final_x"},
            r"recorder\.terms\.bad\.func: cannot import 'no_such_pkg.metrics'",
        ),
        (
            {"func": "test_recorder:missing"},
            r"recorder\.terms\.bad\.func: 'test_recorder' has no attribute 'missing'",
        ),
        (
            {"func": "test_recorder:final_x", "params": {"axes": 1}},
            r"recorder\.terms\.bad\.params: params \['axes'\] do not fit",
        ),
        (
            {"func": "test_recorder:final_x", "parms": {}},
            r"recorder\.terms\.bad\.parms: unknown key",
        ),
    ],
)
def test_bad_terms_fail_before_any_work(tmp_path, recorder_cfg, term, message):
    recorder_cfg["terms"]["bad"] = term
    with pytest.raises(ValueError, match=message):
        Session(recorder_cfg, tmp_path)
    assert not tmp_path.joinpath("manifest.json").exists()


def collides(batch):
    return {"length": batch.length}


def not_json(batch):
    return [object()] * len(batch)


def wrong_length(batch):
    return torch.zeros(len(batch) + 1)


@pytest.mark.parametrize(
    ("func", "error", "message"),
    [
        (
            collides,
            ValueError,
            "recorder term 'bad' writes 'length', which term 'core' already writes",
        ),
        (
            not_json,
            EncodeError,
            "recorder term 'bad'.bad: value <object object .*> cannot be written as JSON",
        ),
        (wrong_length, EncodeError, "recorder term 'bad'.bad: 5 values for 4 episodes"),
    ],
)
def test_term_output_errors_name_the_term(tmp_path, recorder_cfg, func, error, message):
    recorder_cfg["terms"]["bad"] = {"func": func}
    session = Session(recorder_cfg, tmp_path).start()
    adapter = Adapter(session, [])
    with pytest.raises(error, match=message):  # custom terms run at every reset batch
        adapter.reset(range(4))
        adapter.step()
        adapter.reset(range(4))
    session.finish("failed", "test")


def test_session_is_opt_in_and_never_overwrites(tmp_path, recorder_cfg):
    assert active_session() is None
    with Session(recorder_cfg, tmp_path):
        assert active_session() is not None
    assert active_session() is None
    with pytest.raises(FileExistsError, match="episodes.jsonl already exists"):
        Session(recorder_cfg, tmp_path)


def test_failure_and_interrupt_mark_the_manifest(tmp_path, recorder_cfg):
    for status, exc in (("failed", RuntimeError("boom")), ("interrupted", KeyboardInterrupt())):
        out = tmp_path / status
        with pytest.raises(type(exc)), Session(recorder_cfg, out) as session:
            adapter = Adapter(session, [make("mass")])
            adapter.reset(range(4))
            adapter.step()
            adapter.reset([0])
            raise exc
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == status and manifest["counts"]["episodes"] == 1
        assert len(read_records(out / "episodes.jsonl")) == 1
    assert (
        "RuntimeError: boom" in json.loads((tmp_path / "failed/manifest.json").read_text())["error"]
    )


def test_resume_appends_and_continues_seq(tmp_path, recorder_cfg):
    with Session(recorder_cfg, tmp_path) as session:
        adapter = Adapter(session, [])
        adapter.reset(range(4))
        adapter.step()
        adapter.reset(range(4))
    run_id = json.loads((tmp_path / "manifest.json").read_text())["run_id"]
    with Session({**recorder_cfg, "resume": True}, tmp_path) as session:
        adapter = Adapter(session, [])
        adapter.reset(range(4))
        adapter.step()
        adapter.reset(range(2))
    records = read_records(tmp_path / "episodes.jsonl")
    assert [r["seq"] for r in records] == list(range(6))
    assert {r["run_id"] for r in records} == {run_id}


def test_torn_last_line_is_cut_on_reopen(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"seq": 0}\n{"seq": 1}\n{"se')
    with JsonlSink(path) as sink:
        sink.write(b'{"seq": 2}\n', 1)
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [0, 1, 2]


def test_interval_values_replay_at_the_steps_they_were_drawn(tmp_path, recorder_cfg):
    """A replay gives an interval variation the value its source episode drew at each step,
    whatever the seed, and stops at a step the source did not draw at (a diverged episode)."""

    def pushes(adapter, push, seed):
        drawn = []
        for step, ids in ((1, [0]), (2, [0, 1]), (3, [1])):
            adapter.step()
            ids = torch.tensor(ids)
            episodes = adapter.identity.episode_in_env[ids]
            drawn.append(push.sample(ids, seed=seed, episode_in_env=episodes, step=step))
        return drawn

    with Session(recorder_cfg, tmp_path / "source") as session:
        push = make("push", scope="interval")
        adapter = Adapter(session, [make("mass"), push], num_envs=2)
        adapter.reset([0, 1])
        drawn = pushes(adapter, push, SEED)
        adapter.reset([0, 1])
    source = {r["episode_id"]: r for r in read_records(tmp_path / "source" / "episodes.jsonl")}

    replay_cfg = {**recorder_cfg, "replay": {"source": str(tmp_path / "source")}}
    with Session(replay_cfg, tmp_path / "replay") as session:
        push = make("push", scope="interval")
        adapter = Adapter(session, [make("mass"), push], num_envs=2)
        adapter.reset([0, 1])
        replayed = pushes(adapter, push, SEED + 1)  # another seed: values come from the source
        with pytest.raises(ConfigError, match=r"drew it at steps \[2, 3\], not at step 4"):
            push.sample(torch.tensor([1]), seed=SEED, episode_in_env=torch.zeros(1).long(), step=4)
        adapter.reset([0, 1])
    assert all(torch.equal(a, b) for a, b in zip(replayed, drawn, strict=True))
    records = read_records(tmp_path / "replay" / "episodes.jsonl")
    assert len(records) == 2
    for record in records:
        original = source[record["replay_of"]["episode_id"]]
        assert record["variations"] == original["variations"]
        assert [p["step"] for p in record["variations"]["push"]] in ([1, 2], [2, 3])
