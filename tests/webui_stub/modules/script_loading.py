"""Stand-in for A1111 ``modules/script_loading.py``, written for these tests: run a Python file as a
module (remembered in ``loaded_scripts`` by path) and give each extension's ``preload.py`` the command
line parser. Errors in ``preload`` are reported (``errors.report``), not raised.
"""
import importlib.util
import os

from modules import errors

loaded_scripts = {}


def load_module(path):
    """Execute ``path`` as a new module named after the file (not put in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # exceptions go to the caller, which reports them
    loaded_scripts[path] = module
    return module


def preload_extensions(extensions_dir, parser, extension_list=None):
    """Call ``preload(parser)`` from every ``<extensions_dir>/<name>/preload.py``, names in sorted order
    (all folders, or only ``extension_list``)."""
    if not os.path.isdir(extensions_dir):
        return
    names = os.listdir(extensions_dir) if extension_list is None else extension_list
    candidates = (os.path.join(extensions_dir, name, "preload.py") for name in sorted(names))
    for preload_file in filter(os.path.isfile, candidates):
        try:
            preload = getattr(load_module(preload_file), "preload", None)
            if preload is not None:
                preload(parser)
        except Exception:
            errors.report(f"Error running preload() for {preload_file}", exc_info=True)
