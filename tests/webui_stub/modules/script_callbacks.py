"""Stand-in for A1111 ``modules/script_callbacks.py``, written for these tests (no WebUI code in it).

Extensions register with ``on_<event>(fn, *, name=None)``; the stand-in fires an event with
``<event>_callback(...)``. Kept from the WebUI's public surface: those names, the attribute names of
the params objects handed to callbacks (and their constructors' positional order, which the
stand-in's denoiser and ``images`` rely on), callbacks running in the order they were registered,
and a raising callback being reported through ``errors.report`` while the others still run.
``clear_callbacks()`` empties every event (``scripts.load_scripts`` calls it, as the WebUI does).

Simplified: only the events this project fires or registers for exist (see ``_EVENTS``); no
ordering from extension metadata, no removal by script file, no UI-element or reload events.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from modules import errors

# --- what callbacks receive ------------------------------------------------------------------------

@dataclass(eq=False)
class ImageSaveParams:
    """``before_image_saved``/``image_saved``: the PIL image, ``p``, the target path, the PNG text chunks."""
    image: Any
    p: Any
    filename: str
    pnginfo: dict


@dataclass(eq=False)
class ImageGridLoopParams:
    """``image_grid``: the images and the grid layout, which a callback may change."""
    imgs: list
    cols: int
    rows: int


@dataclass(eq=False)
class CFGDenoiserParams:
    """``cfg_denoiser``, before the UNet call. ``x`` is the batch going in, cond rows first, then
    uncond rows; ``denoiser`` is the CFG denoiser object itself. A callback may replace the tensors."""
    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass(eq=False)
class CFGDenoisedParams:
    """``cfg_denoised``: the UNet output (``x``) before the guidance is combined."""
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any


@dataclass(eq=False)
class AfterCFGCallbackParams:
    """``cfg_after_cfg``: the guided result (``x``), which a callback may replace."""
    x: Any
    sampling_step: int
    total_sampling_steps: int


# --- registry ----------------------------------------------------------------------------------------

_EVENTS = (
    "model_loaded", "ui_settings", "ui_tabs", "infotext_pasted",
    "cfg_denoiser", "cfg_denoised", "cfg_after_cfg",
    "image_grid", "before_image_saved", "image_saved",
    "list_optimizers", "list_unets",
)


class _Registration(NamedTuple):
    fn: Callable
    source: str  # file that registered it, for error messages
    name: str | None


_registry: dict[str, list[_Registration]] = {event: [] for event in _EVENTS}


def _registering_file() -> str:
    """The first file up the call stack that is not this module."""
    for frame in inspect.stack()[1:]:
        if frame.filename != __file__:
            return frame.filename
    return "?"


def _registrar(event: str):
    def register(callback, *, name=None):
        _registry[event].append(_Registration(callback, _registering_file(), name))

    register.__name__ = register.__qualname__ = f"on_{event}"
    register.__doc__ = f"Run ``callback`` whenever the ``{event}`` event fires."
    return register


def clear_callbacks():
    for registrations in _registry.values():
        del registrations[:]


def remove_callbacks_for_function(callback_func):
    """Unregister ``callback_func`` from every event."""
    for registrations in _registry.values():
        registrations[:] = [reg for reg in registrations if reg.fn != callback_func]


def _fire(event: str, *args) -> list:
    """Call every registered function with ``args``; return the results of those that did not raise."""
    results = []
    for reg in list(_registry[event]):
        try:
            results.append(reg.fn(*args))
        except Exception:
            errors.report(f"{event} callback from {reg.source} raised", exc_info=True)
    return results


# --- registration ------------------------------------------------------------------------------------

on_model_loaded = _registrar("model_loaded")
on_ui_settings = _registrar("ui_settings")
on_ui_tabs = _registrar("ui_tabs")
on_infotext_pasted = _registrar("infotext_pasted")
on_cfg_denoiser = _registrar("cfg_denoiser")
on_cfg_denoised = _registrar("cfg_denoised")
on_cfg_after_cfg = _registrar("cfg_after_cfg")
on_image_grid = _registrar("image_grid")
on_before_image_saved = _registrar("before_image_saved")
on_image_saved = _registrar("image_saved")
on_list_optimizers = _registrar("list_optimizers")
on_list_unets = _registrar("list_unets")


# --- firing ------------------------------------------------------------------------------------------

def model_loaded_callback(sd_model):
    _fire("model_loaded", sd_model)


def ui_settings_callback():
    _fire("ui_settings")


def ui_tabs_callback() -> list:
    """Each callback returns a list of ``(block, title, elem_id)`` tabs; the lists are joined."""
    return [tab for tabs in _fire("ui_tabs") for tab in (tabs or ())]


def infotext_pasted_callback(infotext: str, params: dict):
    _fire("infotext_pasted", infotext, params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _fire("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _fire("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _fire("cfg_after_cfg", params)


def image_grid_callback(params: ImageGridLoopParams):
    _fire("image_grid", params)


def before_image_saved_callback(params: ImageSaveParams):
    _fire("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams):
    _fire("image_saved", params)


def list_optimizers_callback() -> list:
    """Callbacks append optimizer objects to the list they are given."""
    found = []
    _fire("list_optimizers", found)
    return found


def list_unets_callback() -> list:
    """Callbacks append ``SdUnetOption`` objects to the list they are given."""
    found = []
    _fire("list_unets", found)
    return found
