"""Stand-in for A1111 ``modules/scripts.py``, written for these tests (no WebUI code in it).

Kept from the WebUI's public surface: ``Script`` with the processing hooks the stand-in's
``processing`` calls (same names and argument conventions), ``elem_id``, ``args_from``/``args_to``;
``AlwaysVisible``; the hook argument objects (``PostSampleArgs``, ``PostprocessBatchListArgs``,
``PostprocessImageArgs``, ``PostProcessMaskOverlayArgs``); ``basedir()``; ``load_scripts()``;
``ScriptRunner`` with ``scripts``/``alwayson_scripts``/``selectable_scripts``.

Behaviour an extension can observe, as in the WebUI:
- a hook goes to every always-on script, in script order, with that script's slice
  ``p.script_args[args_from:args_to]`` after the hook's own leading arguments;
- an exception from a hook is reported (``errors.report``) and processing goes on
  (``InterruptedException`` derives from ``BaseException`` and is not caught);
- UI slots: slot 0 is the selectable-script index, then each script's ``ui()`` controls in turn
  (always-on scripts first); ``args_to - args_from`` is the number of controls;
- ``load_scripts`` imports ``<extension>/scripts/*.py`` with the extension folder first on
  ``sys.path`` and returned by ``basedir()`` while the file is imported, and registers each
  ``Script`` subclass the module holds.

Simplified: no Gradio (``ui()`` may return any objects; a control's ``.value`` is its default), no
ordering by extension metadata, no component callbacks, no hires/inpainting hooks, no postprocessing
scripts. Base-class hooks do nothing, so every always-on script is simply called for each hook.
"""
from __future__ import annotations

import inspect
import os
import string
import sys
from dataclasses import dataclass
from typing import Any

from modules import errors, paths, script_callbacks, script_loading, shared

AlwaysVisible = object()
"""Returned from ``Script.show`` by scripts that run on every generation (they have no dropdown entry)."""


# --- hook argument objects ---------------------------------------------------------------------------

@dataclass(eq=False)
class PostSampleArgs:
    samples: Any
    """latents straight from the sampler; a script may replace them"""


@dataclass(eq=False)
class PostprocessBatchListArgs:
    images: list
    """the decoded batch as a list; a script may add, drop or replace entries"""


@dataclass(eq=False)
class PostprocessImageArgs:
    image: Any
    """one PIL image before it is saved; a script may replace it"""


@dataclass(eq=False)
class PostProcessMaskOverlayArgs:
    index: int
    mask_for_overlay: Any
    overlay_image: Any


# --- the script base class -----------------------------------------------------------------------------

_ID_CHARS = set(string.ascii_lowercase + string.digits + "_")


class Script:
    """Base class of extension scripts. Hooks get ``p``, then any hook-specific leading argument,
    then this script's own UI values (``*args``); batch hooks also get keyword arguments."""

    filename = None
    name = None
    args_from = None
    args_to = None
    controls = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    infotext_fields = None
    paste_field_names = None
    setup_for_ui_only = False

    def title(self):
        raise NotImplementedError(f"{type(self).__name__} must define title()")

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        return None

    def elem_id(self, item_id):
        """``script_[<tab>_]<title>_<item_id>``; the tab part only when the script shows on both tabs."""
        title = self.title().lower()
        slug = "".join("_" if ch.isspace() else ch for ch in title if ch.isspace() or ch in _ID_CHARS)
        on_both_tabs = self.show(True) == self.show(False)
        tab = ("img2img_" if self.is_img2img else "txt2img_") if on_both_tabs else ""
        return f"script_{tab}{slug}_{item_id}"

    def run(self, p, *args):
        """Selectable scripts only: do the whole generation, return a ``Processed`` (or None)."""

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs, *args):
        pass

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass


# --- loading extension scripts -----------------------------------------------------------------------

current_basedir = paths.script_path


def basedir():
    """The folder of the extension whose script is being imported (afterwards: the WebUI folder)."""
    return current_basedir


@dataclass
class _Registered:
    """As the WebUI's ``ScriptClassData``: the class, its file, its extension folder and the loaded module."""

    script_class: type
    path: str
    basedir: str
    module: object


scripts_data: list[_Registered] = []
scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None


def _script_files(extension_dir):
    folder = os.path.join(extension_dir, "scripts")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [os.path.join(folder, n) for n in names if n.lower().endswith(".py") and os.path.isfile(os.path.join(folder, n))]


def load_scripts(extension_dirs=None):
    """Forget registered scripts and callbacks, import every extension's ``scripts/*.py`` (default:
    each folder in ``paths.extensions_dir``), and make fresh ``scripts_txt2img``/``scripts_img2img``."""
    global current_basedir, scripts_txt2img, scripts_img2img
    scripts_data.clear()
    script_callbacks.clear_callbacks()
    if extension_dirs is None:
        root = paths.extensions_dir
        extension_dirs = [os.path.join(root, d) for d in sorted(os.listdir(root))] if os.path.isdir(root) else []

    for extension_dir in extension_dirs:
        for path in _script_files(extension_dir):
            saved_sys_path = sys.path
            sys.path = [extension_dir, *saved_sys_path]
            current_basedir = extension_dir
            try:
                module = script_loading.load_module(path)
            except Exception:
                errors.report(f"Could not load script {path}", exc_info=True)
                continue
            finally:
                sys.path = saved_sys_path
                current_basedir = paths.script_path
            scripts_data.extend(_Registered(obj, path, extension_dir, module) for obj in vars(module).values()
                                if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script)

    scripts_txt2img = ScriptRunner()
    scripts_img2img = ScriptRunner()


# --- running them --------------------------------------------------------------------------------------

def _reported(what, script, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an ``Exception`` is reported and gives None."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        errors.report(f"{what} failed for script {script.filename}", exc_info=True)
        return None


def _hook(name):
    """A ``ScriptRunner`` method that calls hook ``name`` on the always-on scripts."""
    def call_hook(self, p, *leading, **kwargs):
        self._call_each(name, p, leading, kwargs)

    call_hook.__name__ = call_hook.__qualname__ = name
    return call_hook


class ScriptRunner:
    def __init__(self):
        self.scripts, self.alwayson_scripts, self.selectable_scripts = [], [], []

    def initialize_scripts(self, is_img2img, script_classes=None):
        """Create the scripts (registered ones, or ``script_classes``: classes or ready instances) and
        sort them by what ``show()`` answers: always-on, selectable, or not on this tab."""
        self.scripts, self.alwayson_scripts, self.selectable_scripts = [], [], []
        if script_classes is None:
            sources = [(entry.script_class, entry.path) for entry in scripts_data]
        else:
            sources = [(c, inspect.getfile(c if isinstance(c, type) else type(c))) for c in script_classes]
        for source, path in sources:
            try:
                script = source() if isinstance(source, type) else source
            except Exception:
                errors.report(f"Could not create script {source!r} from {path}", exc_info=True)
                continue
            script.filename = path
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            shown = script.show(is_img2img)
            if not shown:
                continue
            script.alwayson = shown is AlwaysVisible
            self.scripts.append(script)
            (self.alwayson_scripts if script.alwayson else self.selectable_scripts).append(script)

    def setup_ui(self):
        """Call every script's ``ui()`` and give each its slots; returns the list of all controls."""
        inputs = [None]  # slot 0: index of the selected script (0 = none)
        for script in self.alwayson_scripts + self.selectable_scripts:
            script.args_from = script.args_to = len(inputs)
            script.controls = _reported("ui()", script, script.ui, script.is_img2img)
            if script.controls is None:
                continue
            script.name = (_reported("title()", script, script.title) or script.filename).lower()
            inputs.extend(script.controls)
            script.args_to = len(inputs)
        return inputs

    def default_script_args(self):
        """``p.script_args`` as the API builds it by default: 0, then every control's value."""
        values = [0]
        for script in self.scripts:
            if not script.controls:
                continue
            values.extend([None] * (script.args_to - len(values)))
            values[script.args_from:script.args_to] = [getattr(c, "value", c) for c in script.controls]
        return values

    def run(self, p, *args):
        """Run the selectable script chosen by ``args[0]``; None when none is chosen."""
        chosen = args[0] if args else 0
        if not chosen:
            return None
        script = self.selectable_scripts[chosen - 1]
        processed = script.run(p, *args[script.args_from:script.args_to])
        shared.total_tqdm.clear()
        return processed

    def _call_each(self, name, p, leading, kwargs):
        for script in list(self.alwayson_scripts):
            own_args = p.script_args[script.args_from:script.args_to]
            _reported(name, script, getattr(script, name), p, *leading, *own_args, **kwargs)

    def setup_scrips(self, p, *, is_ui=True):  # sic: the WebUI's spelling
        for script in list(self.alwayson_scripts):
            if is_ui or not script.setup_for_ui_only:
                _reported("setup", script, script.setup, p, *p.script_args[script.args_from:script.args_to])

    before_process = _hook("before_process")
    process = _hook("process")
    before_process_batch = _hook("before_process_batch")
    after_extra_networks_activate = _hook("after_extra_networks_activate")
    process_batch = _hook("process_batch")
    process_before_every_sampling = _hook("process_before_every_sampling")
    post_sample = _hook("post_sample")
    postprocess_batch_list = _hook("postprocess_batch_list")
    postprocess_image = _hook("postprocess_image")
    postprocess_maskoverlay = _hook("postprocess_maskoverlay")
    postprocess_image_after_composite = _hook("postprocess_image_after_composite")
    postprocess = _hook("postprocess")

    def postprocess_batch(self, p, images, **kwargs):
        """The decoded batch goes to the scripts as the keyword ``images``."""
        self._call_each("postprocess_batch", p, (), {**kwargs, "images": images})
