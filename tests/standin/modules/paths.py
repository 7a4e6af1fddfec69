"""Stand-in for A1111 ``modules/paths.py`` / ``paths_internal.py`` (24-32): ``models_path`` is
``<data_path>/models``. Read ``modules.paths.models_path`` at call time: tests move it."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = script_path
models_path = os.path.join(data_path, "models")


def set_data_path(path, models=None):
    """Stand-in only: move the data folder (and ``models`` under it unless given)."""
    global data_path, models_path
    data_path = str(path)
    models_path = str(models) if models else os.path.join(data_path, "models")
