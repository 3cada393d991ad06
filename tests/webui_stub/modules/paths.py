"""Mirrors A1111 ``modules/paths.py`` + ``paths_internal.py``: the folders the WebUI uses.

The stand-in roots everything at ``$WEBUI_STUB_DATA_DIR`` (the test fixture points it at a temp
dir) instead of the WebUI checkout. As in A1111, importing it imports ``modules.safe``, which replaces
``torch.load`` (A1111 host only).
"""
import os
import tempfile

import modules.safe  # noqa: F401  (A1111 replaces torch.load here, at start-up)

data_path = os.environ.get("WEBUI_STUB_DATA_DIR") or tempfile.mkdtemp(prefix="webui-stub-")
script_path = data_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")
sd_configs_path = os.path.join(script_path, "configs")
cwd = os.getcwd()
