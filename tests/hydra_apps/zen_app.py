"""An app written with hydra-zen: its configs live in a ``store`` and ``zen(task).hydra_main``
runs it. The config is typed with arena-recording's dataclasses, so ``+recorder=default``
fills ``recorder`` and Hydra checks the variations while composing. A custom term is a
hydra-zen ``builds`` of its function, stored as a ``recorder/terms`` option: its params are
checked against the function's signature while composing (``+recorder/terms=final_x``).

The variations come from a stored option (plain data) merged into the typed field: hydra-zen
turns a dataclass instance in a default (``make_config``, ``builds``, a stored dataclass type)
into a ``builds`` of its class, which is not a ``VariationCfg`` node.
"""

from typing import Any

from cartpole import evaluate
from hydra_zen import ZenField, builds, make_config, store, zen
from my_pkg.metrics import final_x

from arena_recording.core.config import RecorderCfg, TermCfg, VariationCfg

FinalX = builds(final_x, populate_full_signature=True, zen_partial=True, zen_exclude=["batch"])
store(
    TermCfg(func=FinalX(axis=0)),
    group="recorder/terms",
    name="final_x",
    package="recorder.terms.final_x",
)
store(
    {"gravity": {"sampler": {"type": "uniform", "low": 8.0, "high": 12.0}}},
    group="variations",
    name="cartpole",
)
store(
    make_config(
        seed=0,
        num_envs=4,
        steps=60,
        fail_at=ZenField(int | None, None),
        recorder=ZenField(RecorderCfg | None, None),
        variations=ZenField(dict[str, VariationCfg], {}),
        hydra_defaults=["_self_", {"variations": "cartpole"}],
    ),
    name="eval",
)


def task(seed: int, num_envs: int, steps: int, fail_at: int | None, variations: Any) -> int:
    config = {"seed": seed, "num_envs": num_envs, "steps": steps, "fail_at": fail_at}
    return evaluate({**config, "variations": variations})


if __name__ == "__main__":
    store.add_to_hydra_store()
    zen(task).hydra_main(config_name="eval", config_path=None, version_base="1.3")
