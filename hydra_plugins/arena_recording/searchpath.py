"""Makes arena-recording's config groups visible to every Hydra app.

Hydra discovers this plugin by scanning the ``hydra_plugins`` namespace package, so an app needs
no code change: once the package is installed, ``python app.py +recorder=core`` works, also for
apps with ``config_path=None``. Two search-path entries:

- ``pkg://arena_recording.conf`` (appended): the ``recorder`` group. The app's own config dir
  comes first, so an app may shadow an option such as ``recorder/core``.
- ``pkg://hydra_plugins.arena_recording`` (before Hydra's own configs): ``hydra/env/default``,
  Hydra's slot for environment-wide defaults, registers the recorder callback in the master
  config of every app, which is what makes sweeping the recorder group record.

It also stores the config schemas of ``arena_recording.core.config`` (through a hydra-zen
store, in Hydra's config store):

- ``arena_recording/schema``: ``recorder``, ``term``, ``variation`` (the ``recorder/*.yaml``
  options extend ``recorder``; an app can extend any of them from its defaults list, e.g.
  ``/arena_recording/schema/variation@variations.gravity`` types one variation of a YAML app);
- ``arena_recording/sampler``: ``uniform``, ``log_uniform``, ``normal``, ``choice``,
  ``bernoulli``, ``constant`` (``+arena_recording/sampler@variations.mass.sampler=normal``).

Hydra re-imports plugin modules on every scan (also in launcher workers): everything here is
idempotent. Check it with ``python app.py --info searchpath``.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra_zen import ZenStore

from arena_recording.core.config import SAMPLERS, RecorderCfg, TermCfg, VariationCfg
from arena_recording.integrations.hydra_callback import register_resolvers

PROVIDER = "arena-recording"
CONF_PATH = "pkg://arena_recording.conf"
ENV_PATH = "pkg://hydra_plugins.arena_recording"
SCHEMA_GROUP = "arena_recording/schema"
SAMPLER_GROUP = "arena_recording/sampler"


def _schema(node: type) -> type:
    """The dataclass itself: hydra-zen's default would wrap it in ``builds`` (a ``_target_``),
    and a ``recorder`` node must be a ``RecorderCfg`` to switch recording on."""
    return node


def register_configs() -> None:
    """Store the config schemas in Hydra's config store (idempotent: entries are replaced)."""
    store = ZenStore("arena_recording", overwrite_ok=True)(provider=PROVIDER, to_config=_schema)
    schema = store(group=SCHEMA_GROUP)
    schema(RecorderCfg, name="recorder")
    schema(TermCfg, name="term")
    schema(VariationCfg, name="variation")
    for kind, cfg in SAMPLERS.items():
        store(cfg, group=SAMPLER_GROUP, name=kind.value)
    store.add_to_hydra_store()


register_configs()
register_resolvers()


class ArenaRecordingSearchPathPlugin(SearchPathPlugin):
    """Adds the ``recorder`` config group and the environment defaults to the search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        present = {element.path for element in search_path.get_path()}
        if ENV_PATH not in present:
            search_path.prepend(PROVIDER, ENV_PATH, anchor=SearchPathQuery(provider="hydra"))
        if CONF_PATH not in present:
            search_path.append(PROVIDER, CONF_PATH)
