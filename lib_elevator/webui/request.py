"""A VideoElevator request as the WebUI hands it over: the script's arguments from the UI
(positional) or the API (one dict of schema names), and the errors that make the API answer 422.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from ..params import ElevatorParams, ParamError, field_specs
from ..video import FORMATS

SCRIPT_FIELDS = ("enabled", "motion_model", "t2v_lora", "solver", "formats", "loop", "compare", "motion_loras")
SOLVERS = ("auto", "ddim", "lcm")
DEFAULT_FORMATS = ("mp4", "gif")


class RequestError(ValueError):
    """A bad VideoElevator request. ``status_code``/``detail`` make the WebUI API answer HTTP 422."""

    def __init__(self, message: str):
        super().__init__(message)
        self.status_code = 422
        self.detail = message


class VideoElevator(RequestError):
    """What ``p.sample`` raises to refuse a request, before anything is changed.

    The WebUI shows a failed job as ``<class name>: <text>``; with this name and the text without
    its "VideoElevator: " prefix, the user reads the refusal exactly as written. The API's
    ``detail`` keeps the whole message.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.args = (message.removeprefix("VideoElevator: "),)


def refusal_error(message: str) -> VideoElevator:
    """``VideoElevator(message)``, and also the WebUI API's FastAPI ``HTTPException`` when FastAPI is there:
    the API's exception handler then answers HTTP 422 with the message and, as for any ``HTTPException``,
    prints no traceback (it prints one for every other exception). Name and text stay ``VideoElevator``'s."""
    try:
        from fastapi.exceptions import HTTPException
    except ImportError:
        return VideoElevator(message)
    return _as_http_exception(HTTPException)(message)


@functools.cache
def _as_http_exception(http_exception: type) -> type:
    return type(VideoElevator.__name__, (VideoElevator, http_exception), {"__str__": ValueError.__str__, "headers": None})


@dataclass
class MotionModel:
    """What the script resolved for this request: the adapter, what it is, and an optional T2V LoRA."""

    name: str
    adapter: torch.nn.Module
    info: object
    solver: str = "auto"
    lora: dict | None = None
    lora_name: str = ""
    motion_loras: tuple = ()  # (MotionLora, weight) pairs on the motion modules

    @property
    def resolved_solver(self) -> str:
        if self.solver != "auto":
            return self.solver
        return self.info.default_solver


def param_field_names() -> tuple:
    return tuple(spec.name for spec in field_specs())


@dataclass(frozen=True)
class ElevatorRequest:
    """The script's arguments: from the UI (positional) or the API (one dict of schema names)."""

    enabled: bool
    motion_model: str
    t2v_lora: str
    solver: str
    formats: tuple
    loop: int
    params: ElevatorParams
    compare: bool = False
    motion_loras: tuple = ()  # "NAME" or "NAME:weight" entries

    def with_overrides(self, overrides: dict) -> "ElevatorRequest":
        """This request with some fields replaced (an X/Y/Z plot cell's values), validated as the API's."""
        if not overrides:
            return self
        script_fields = {name: value for name, value in overrides.items() if name in SCRIPT_FIELDS}
        try:
            params = ElevatorParams.from_dict({**self.params.to_dict(),
                                               **{k: v for k, v in overrides.items() if k not in SCRIPT_FIELDS}})
        except ParamError as error:
            raise RequestError(str(error)) from None
        return dataclasses.replace(self, params=params, **script_fields)

    @classmethod
    def from_script_args(cls, args) -> "ElevatorRequest":
        if args and isinstance(args[0], dict):
            values = {"enabled": True, **args[0]}
        else:
            values = dict(zip(SCRIPT_FIELDS + param_field_names(), args))
        known = set(SCRIPT_FIELDS) | set(param_field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise RequestError(f"VideoElevator: unknown field {unknown[0]!r}; known fields are {', '.join(sorted(known))}")
        try:
            params = ElevatorParams.from_dict({k: v for k, v in values.items() if k not in SCRIPT_FIELDS})
        except ParamError as error:
            raise RequestError(str(error)) from None
        formats = values.get("formats", DEFAULT_FORMATS)
        formats = tuple(formats.split(",") if isinstance(formats, str) else formats)
        bad = [fmt for fmt in formats if fmt not in FORMATS]
        if bad or not formats:
            raise RequestError(f"VideoElevator: formats={list(formats)!r} is not allowed; choose from {', '.join(FORMATS)}")
        solver = values.get("solver", "auto") or "auto"
        if solver not in SOLVERS:
            raise RequestError(f"VideoElevator: solver={solver!r} is not allowed; one of {', '.join(SOLVERS)}")
        loop = values.get("loop", 0)
        if not isinstance(loop, (int, float)) or isinstance(loop, bool) or loop < 0 or loop != int(loop):
            raise RequestError(f"VideoElevator: loop={loop!r} is not allowed; a whole number >= 0 (0 = forever)")
        enabled, compare = values.get("enabled", False), values.get("compare", False)
        for name, value in (("enabled", enabled), ("compare", compare)):
            if not isinstance(value, bool):
                raise RequestError(f"VideoElevator: {name}={value!r} is not allowed; true or false")
        motion_loras = values.get("motion_loras") or ()
        if isinstance(motion_loras, str):
            motion_loras = [entry.strip() for entry in motion_loras.split(",") if entry.strip()]
        return cls(enabled, values.get("motion_model") or "", values.get("t2v_lora") or "", solver, formats,
                   int(loop), params, compare, tuple(motion_loras))
