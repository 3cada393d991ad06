"""Stand-in for A1111 1.10's ``modules/progress.py``: what ``progressapi`` (the UI's progress poll) computes.

``progress = job_no/job_count + sampling_step/sampling_steps/job_count`` (each term only with positive
counts, capped at 1); ``eta = elapsed/progress - elapsed`` since ``state.time_start``; with live previews on
and asked for, ``state.set_current_image()`` runs and a changed preview is returned with its id.
Simplified: no task queue (the polled task is the running one), the preview is the PIL image itself rather
than a data URL.
"""
import time
from dataclasses import dataclass

from modules import shared


@dataclass
class ProgressRequest:
    id_task: str = None
    id_live_preview: int = -1
    live_preview: bool = True


@dataclass
class ProgressResponse:
    active: bool
    queued: bool
    completed: bool
    progress: float = None
    eta: float = None
    live_preview: object = None
    id_live_preview: int = None
    textinfo: str = None


def progressapi(req: ProgressRequest) -> ProgressResponse:
    state = shared.state
    progress = 0.0
    if state.job_count > 0:
        progress += state.job_no / state.job_count
        if state.sampling_steps > 0:
            progress += state.sampling_step / state.sampling_steps / state.job_count
    progress = min(progress, 1.0)
    elapsed = time.time() - state.time_start
    eta = elapsed / progress - elapsed if progress > 0 else None
    live_preview, id_live_preview = None, req.id_live_preview
    if shared.opts.live_previews_enable and req.live_preview:
        state.set_current_image()
        if state.id_live_preview != req.id_live_preview and state.current_image is not None:
            live_preview, id_live_preview = state.current_image, state.id_live_preview
    return ProgressResponse(True, False, False, progress, eta, live_preview, id_live_preview, state.textinfo)
