"""Picks the host adapter for the loaded model and hooks it into one txt2img request.

The only module that knows both hosts; the adapters never import it.
"""
from __future__ import annotations

from ..params import ElevatorParams
from .request import MotionModel, RefusedError, RequestError


def host_for(sd_model):
    """The adapter module for the loaded model: Forge 2 engines carry ``forge_objects``."""
    if getattr(sd_model, "forge_objects", None) is not None:
        from .hosts import forge

        return forge
    from .hosts import a1111

    return a1111


def refusal_reasons(p, params: ElevatorParams, motion: MotionModel | None) -> list[str]:
    """Everything about this request the loaded model's host cannot honour, in a user's words."""
    return host_for(p.sd_model).refusal_reasons(p, params, motion)


def refuse(p, error: Exception) -> None:
    """Make this request fail with ``error``'s message, changing nothing else.

    The WebUI logs and ignores exceptions raised in ``before_process`` (it would then render a
    plain image), so the refusal is raised from ``p.sample`` instead: txt2img shows it, the API
    answers HTTP 422 with it.
    """
    message = str(error) if str(error).startswith("VideoElevator") else f"VideoElevator: {error}"

    def sample(*args, **kwargs):
        raise RequestError(message)

    p.sample = sample


def wrap_sample(p, params: ElevatorParams, motion: MotionModel, runs: list) -> None:
    """Shadow ``p.sample`` with a wrapper that runs the original inside the host's ``ElevatorRun``."""
    original = p.sample

    def sample(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        reasons = refusal_reasons(p, params, motion)  # the checkpoint may have changed since before_process
        if reasons:
            raise RefusedError("VideoElevator: " + "; ".join(reasons))
        run = host_for(p.sd_model).Run(p, params, motion, list(seeds))
        runs.append(run)
        with run.installed():
            return original(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts)

    p.sample = sample
