"""In-process checks of the Hydra pieces: idempotent schema registration and search path,
config groups composed by real Hydra (``+recorder=default`` is core and variations), the job
start checks of variations wherever they sit, and sweep-table helpers."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra._internal.utils import create_config_search_path
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from arena_recording.analysis.sweeps import flatten, parse_override, read_records
from arena_recording.core.config import SAMPLERS, RecorderCfg, UniformCfg, VariationCfg
from arena_recording.errors import ConfigError
from arena_recording.integrations.hydra_callback import (
    check_variations,
    recorder_node,
    variations_from_config,
)

PLUGIN = "hydra_plugins.arena_recording.searchpath"


def test_the_configs_and_the_plugin_import_no_torch() -> None:
    code = (
        "import sys, arena_recording.core.config, hydra_plugins.arena_recording.searchpath; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_and_registration_are_idempotent() -> None:
    module = importlib.import_module(PLUGIN)
    module.register_configs()
    importlib.reload(module)  # what a plugin scan in a launcher worker does
    stored = ConfigStore.instance().repo["arena_recording"]
    assert set(stored["schema"]) == {"recorder.yaml", "term.yaml", "variation.yaml"}
    assert set(stored["sampler"]) == {f"{kind.value}.yaml" for kind in SAMPLERS}
    node = ConfigStore.instance().load("arena_recording/schema/recorder.yaml").node
    assert OmegaConf.get_type(node) is RecorderCfg  # the dataclass itself, no _target_

    path = create_config_search_path(None)
    module.ArenaRecordingSearchPathPlugin().manipulate_search_path(path)
    entries = [(e.provider, e.path) for e in path.get_path()]
    assert entries.count(("arena-recording", module.CONF_PATH)) == 1
    assert entries.count(("arena-recording", module.ENV_PATH)) == 1
    providers = [provider for provider, _ in entries]
    assert providers.index("arena-recording") < providers.index("hydra")


@pytest.fixture
def hydra_compose():
    GlobalHydra.instance().clear()
    with initialize(config_path=None, version_base="1.3"):
        yield compose
    GlobalHydra.instance().clear()


def test_default_is_core_and_variations(hydra_compose) -> None:
    default = hydra_compose(overrides=["+recorder=default"], return_hydra_config=True)
    both = hydra_compose(overrides=["+recorder=[core,variations]"], return_hydra_config=True)
    assert OmegaConf.to_container(default.recorder) == OmegaConf.to_container(both.recorder)
    assert list(default.recorder.terms) == ["core", "variations"]
    for key in ("hydra.callbacks", "hydra.job.env_set"):
        assert OmegaConf.select(default, key) == OmegaConf.select(both, key)
    job = {k: v for k, v in OmegaConf.to_container(default).items() if k != "hydra"}
    assert job == {k: v for k, v in OmegaConf.to_container(both).items() if k != "hydra"}


def test_groups_compose_into_typed_recorder(hydra_compose) -> None:
    cfg = hydra_compose(
        overrides=[
            "+recorder=[core,variations]",
            "+recorder.terms.extra={func: my_pkg.metrics:final_x}",
            "recorder.resume=true",
            "+arena_recording/sampler@variations.mass.sampler=normal",
            "variations.mass.sampler.std=0.5",
        ],
        return_hydra_config=True,
    )
    assert recorder_node(cfg) is not None
    assert OmegaConf.get_type(cfg.recorder) is RecorderCfg
    assert set(cfg.recorder.terms) == {"core", "variations", "extra"}
    assert cfg.recorder.resume is True
    assert (
        cfg.hydra.callbacks.arena_recording._target_
        == "arena_recording.integrations.hydra_callback.RecorderCallback"
    )
    sampler = OmegaConf.to_container(cfg.variations.mass.sampler, enum_to_str=True)
    assert {k: v for k, v in sampler.items() if v is not None} == {
        "type": "normal",
        "mean": 0.0,
        "std": 0.5,
    }
    check_variations(cfg)
    (mass,) = variations_from_config(cfg.variations)
    assert mass.key == "mass" and mass.schema()["distribution"] == "normal"


def test_only_our_recorder_node_switches_recording_on(hydra_compose) -> None:
    assert recorder_node(hydra_compose(overrides=[])) is None
    foreign = hydra_compose(overrides=["+recorder={camera: front, fps: 30}"])
    assert recorder_node(foreign) is None


def test_variations_from_structured_and_list_configs() -> None:
    node = OmegaConf.create(
        {
            "gravity": VariationCfg(sampler=UniformCfg(low=8.0, high=12.0)),
            "pole": {"sampler": {"type": "choice", "choices": ["short", "long"]}},
        }
    )
    built = variations_from_config(node)
    assert [v.key for v in built] == ["gravity", "pole"]
    listed = variations_from_config(
        OmegaConf.create([{"key": "p", "sampler": {"type": "bernoulli", "p": 0.2}}])
    )
    assert listed[0].schema()["kind"] == "boolean"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (
            {"env": {"variations": {"bad": {"sampler": {"type": "bernoulli", "p": 2}}}}},
            "env.variations.bad.sampler.p",
        ),
        (
            {"variations": {"cube.mass": {"sampler": {"type": "unifrom"}}}},
            "variations.cube.mass.sampler.type",
        ),
        (
            {"variations": {"g": {"sampler": {"type": "constant"}, "scoep": "x"}}},
            "variations.g.scoep",
        ),
        (
            {"variations": {"g": {"sampler": {"type": "normal", "hgih": 1}}}},
            "variations.g.sampler.hgih",
        ),
        (
            {"variations": {"g": {"sampler": {"type": "constant"}, "enabled": "maybe"}}},
            "variations.g.enabled",
        ),
        (
            {"a": [{"variations": [{"key": "x", "sampler": {"type": "choice"}}]}]},
            "a[0].variations[0].sampler.choices",
        ),
        ({"variations": {"g": {"sampler": {"type": "constant"}}, "h": 3}}, "variations.h"),
    ],
    ids=["nested", "dotted-key", "variation-key", "sampler-key", "bool", "list", "not-a-mapping"],
)
def test_job_start_checks_name_the_config_path(config: dict, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_variations(OmegaConf.create(config))
    assert raised.value.key == key


def test_other_uses_of_a_variations_key_and_interpolations() -> None:
    check_variations(
        OmegaConf.create({"variations": {"note": "not ours"}, "x": {"variations": [1]}})
    )
    config = OmegaConf.create(
        {"hi": 12.0, "variations": {"g": {"sampler": {"type": "uniform", "high": "${hi}"}}}}
    )
    check_variations(config)
    (gravity,) = variations_from_config(config.variations)
    assert gravity.schema()["high"] == [12.0]


def test_sweep_helpers(tmp_path: Path) -> None:
    assert parse_override("+recorder=core") == ("recorder", "core")
    assert parse_override("seed=3") == ("seed", 3)
    assert parse_override("~recorder.terms.core") == ("recorder.terms.core", "")
    assert parse_override("x=[a,b]") == ("x", "[a,b]")
    assert flatten({"a": 1, "v": {"g": 9.8, "m": {"x": [1, 2]}}, "e": {}}) == {
        "a": 1,
        "v.g": 9.8,
        "v.m.x": [1, 2],
        "e": {},
    }
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"seq": 0}\n{"seq": 1}\n{"seq": 2, "en')
    assert read_records(path) == ([{"seq": 0}, {"seq": 1}], 1)
