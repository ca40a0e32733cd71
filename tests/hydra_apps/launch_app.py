"""The hydra-zen app run through ``hydra_zen.launch`` (Hydra from Python, no command line
parsing): the overrides are this script's arguments."""

import sys

from hydra_zen import launch, store, zen
from zen_app import task

if __name__ == "__main__":
    store.add_to_hydra_store()
    launch(store[None, "eval"], zen(task), overrides=sys.argv[1:], version_base="1.3")
