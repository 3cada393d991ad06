"""Picks the host adapter for the loaded model and hooks it into one txt2img request.

The only module that knows both hosts; the adapters never import it.
"""
from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ..compare import COMPARE_ORDER
from ..params import ElevatorParams
from ..sampler import STAGES, PassCounter
from .request import ElevatorRequest, MotionModel, refusal_error
from .run import elevator_sampler_and_schedule
from .travel import TravelPlan, travelled


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
        raise refusal_error(message)

    p.sample = sample


@dataclass
class ElevatorJob:
    """One txt2img request with VideoElevator on, from ``before_process`` to ``postprocess``.

    It holds no reference to ``p``: the WebUI keeps ``p`` alive after the request in its samplers'
    reference cycles until a full garbage collection, so whatever hangs on ``p`` must be small and
    plain by then (``summary``).
    """

    request: ElevatorRequest
    motion: MotionModel
    counters: list[PassCounter] = field(default_factory=list)  # one per sampled video
    modes: list[str] = field(default_factory=list)  # the mode of each counter's video
    videos: list[Path] = field(default_factory=list)  # every file saved, in order
    active: object = None  # the ``ElevatorRun`` of the ``p.sample`` call in progress
    compared: list[dict] = field(default_factory=list)  # per batch of a comparison: the other modes' latents
    prompt_loras: list = field(default_factory=list)  # (MotionLora, weight) from the prompt's <lora:…> tags
    travel: TravelPlan | None = None  # this batch's prompt travel (``travel.key_prompts``); None without frame keys

    def summary(self) -> dict:
        """What outlives the request (``p.videoelevator``, the API's ``info``): plain JSON values."""
        summary = {"passes": _summed(self.counters), "reused": sum(counter.reused for counter in self.counters),
                   "videos": [str(path) for path in self.videos]}
        if self.request.compare:
            summary["passes_by_mode"] = {
                mode: _summed([c for c, m in zip(self.counters, self.modes) if m == mode]) for mode in COMPARE_ORDER}
        return summary


def _summed(counters) -> dict:
    return {stage: sum(counter.passes[stage] for counter in counters) for stage in STAGES}


def wrap_sample(p, job: ElevatorJob) -> None:
    """Shadow ``p.sample`` with a wrapper that runs the original inside the host's ``ElevatorRun``.

    The wrapper holds ``p`` and the job weakly and the class's ``sample`` unbound, so ``p`` and its
    own attribute form no reference cycle. A failure ends the job at once (``postprocess`` will not
    run): ``p.videoelevator`` then keeps only its summary. Unless the mode is t2v (the WebUI's own
    sampler), the sampler that will run goes into ``p`` now, before its prompt schedules are built
    (``run.elevator_sampler_and_schedule``).
    """
    if job.request.params.mode != "t2v":
        p.sampler_name, p.scheduler = elevator_sampler_and_schedule(p.sampler_name, p.scheduler)
    p_ref, job_ref = weakref.ref(p), weakref.ref(job)
    earlier = vars(p).get("sample")  # another extension's wrapper, if it came first

    def sample(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        current, job = p_ref(), job_ref()
        arguments = (conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts)
        try:
            return _sample_in_run(current, job, earlier, arguments)
        except BaseException:
            current.videoelevator = job.summary()
            raise

    p.sample = sample


def _sample_in_run(p, job: ElevatorJob, earlier, arguments):
    """Sample the batch in the request's mode, or once per mode for a comparison (``COMPARE_ORDER``,
    elevate last, whose latents the WebUI then decodes as usual) from the same noise; the other modes'
    latents go to ``job.compared``. Motion LoRAs from the prompt join the panel's. With prompt travel every
    frame samples with its own conditioning."""
    params = job.request.params
    if job.travel is not None:
        arguments = (travelled(arguments[0], job.travel), *arguments[1:])
    motion = dataclasses.replace(job.motion, motion_loras=job.motion.motion_loras + tuple(job.prompt_loras))
    reasons = refusal_reasons(p, params, motion)  # the checkpoint may have changed
    if reasons:
        raise refusal_error("VideoElevator: " + "; ".join(reasons))
    latents, noise = {}, None
    for mode in COMPARE_ORDER if job.request.compare else (params.mode,):
        run = host_for(p.sd_model).Run(p, dataclasses.replace(params, mode=mode), motion, list(arguments[2]))
        run.noise = noise
        job.active = run
        try:
            with run.installed():
                latents[mode] = earlier(*arguments) if earlier is not None else type(p).sample(p, *arguments)
        finally:
            job.active = None
            job.counters.append(run.counter)
            job.modes.append(mode)
        noise = run.noise
    if job.request.compare:
        job.compared.append({mode: latents[mode] for mode in COMPARE_ORDER if mode != COMPARE_ORDER[-1]})
    return latents[COMPARE_ORDER[-1] if job.request.compare else params.mode]
