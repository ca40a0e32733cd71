"""In-process checks of the Hydra pieces: schemas in step with the core configs, idempotent
registration and search path, config groups composed by real Hydra, sweep-table helpers."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest
from hydra import compose, initialize
from hydra._internal.utils import create_config_search_path
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from arena_recording.analysis.sweeps import flatten, parse_override, read_records
from arena_recording.core import sampling, session, terms, variations
from arena_recording.integrations import hydra_configs as configs
from arena_recording.integrations.hydra_callback import (
    check_variations,
    recorder_node,
    variations_from_config,
)


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_schemas_match_the_core_configs() -> None:
    assert field_names(configs.RecorderConf) == field_names(session.RecorderCfg)
    assert field_names(configs.TermConf) == field_names(terms.TermCfg)
    assert field_names(configs.VariationConf) == field_names(variations.VariationCfg)
    assert set(configs.SAMPLER_CONFS) == set(sampling.SAMPLER_TYPES)
    for name, conf in configs.SAMPLER_CONFS.items():
        core = sampling.SAMPLER_TYPES[name]
        assert field_names(conf) == field_names(core) | {"type"}, name
        assert conf().type == name
        defaults = OmegaConf.to_container(OmegaConf.structured(conf))
        if "???" not in json.dumps(defaults):  # choice has no default choices
            assert sampling.sampler_cfg(defaults) == core()


def test_plugin_and_registration_are_idempotent() -> None:
    configs.register_configs()
    configs.register_configs()
    stored = ConfigStore.instance().repo["arena_recording"]
    assert {"recorder.yaml", "term.yaml", "variation.yaml"} <= set(stored["schema"])
    assert set(stored["sampler"]) == {f"{name}.yaml" for name in configs.SAMPLER_CONFS}

    module = importlib.import_module("hydra_plugins.arena_recording.searchpath")
    importlib.reload(module)  # what a plugin scan in a launcher worker does
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
    assert OmegaConf.get_type(cfg.recorder) is configs.RecorderConf
    assert set(cfg.recorder.terms) == {"core", "variations", "extra"}
    assert cfg.recorder.resume is True
    assert (
        cfg.hydra.callbacks.arena_recording._target_
        == "arena_recording.integrations.hydra_callback.RecorderCallback"
    )
    assert cfg.variations.mass.sampler == {
        "type": "normal",
        "mean": 0.0,
        "std": 0.5,
        "low": None,
        "high": None,
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
            "gravity": configs.VariationConf(sampler=configs.UniformConf(low=8.0, high=12.0)),
            "pole": {"sampler": {"type": "choice", "choices": ["short", "long"]}},
        }
    )
    built = variations_from_config(node)
    assert [v.key for v in built] == ["gravity", "pole"]
    listed = variations_from_config(
        OmegaConf.create([{"key": "p", "sampler": {"type": "bernoulli", "p": 0.2}}])
    )
    assert listed[0].schema()["kind"] == "boolean"
    with pytest.raises(ValueError, match=r"config key env\.variations\.bad: .*p 2"):
        check_variations(
            OmegaConf.create(
                {"env": {"variations": {"bad": {"sampler": {"type": "bernoulli", "p": 2}}}}}
            )
        )


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
