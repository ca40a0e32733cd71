"""Makes arena-recording's config groups visible to every Hydra app.

Hydra discovers this plugin by scanning the ``hydra_plugins`` namespace package, so an app needs
no code change: once the package is installed, ``python app.py +recorder=core`` works, also for
apps with ``config_path=None``. Two search-path entries:

- ``pkg://arena_recording.conf`` (appended): the ``recorder`` group. The app's own config dir
  comes first, so an app may shadow an option such as ``recorder/core``.
- ``pkg://hydra_plugins.arena_recording`` (before Hydra's own configs): ``hydra/env/default``,
  Hydra's slot for environment-wide defaults, registers the recorder callback in the master
  config of every app, which is what makes sweeping the recorder group record.

Hydra re-imports plugin modules on every scan (also in launcher workers): everything here is
idempotent. Check it with ``python app.py --info searchpath``.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

from arena_recording.integrations.hydra_callback import register_resolvers
from arena_recording.integrations.hydra_configs import register_configs

PROVIDER = "arena-recording"
CONF_PATH = "pkg://arena_recording.conf"
ENV_PATH = "pkg://hydra_plugins.arena_recording"

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
