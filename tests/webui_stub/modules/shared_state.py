"""Stand-in for A1111 ``modules/shared_state.py`` (the object behind ``shared.state``), written for
these tests (no WebUI code in it).

Kept: the attribute names that the stand-in and the extension read or write (interrupt/skip/stop
flags, job name and counters, sampling step counters, the live-preview latent and image) and the
methods ``interrupt``, ``skip``, ``stop_generating`` (they only raise a flag; the CFG denoiser
checks the flags on its next call and raises ``InterruptedException``), ``begin`` (a fresh job:
every flag and counter cleared, ``job_count = -1`` until processing knows it), ``end``, ``nextjob``,
``set_current_image`` / ``do_set_current_image`` (a preview is decoded from ``current_latent`` when
``show_progress_every_n_steps`` sampling steps have passed since the last one) and ``assign_current_image``.
Simplified: no server commands, no logging, no ``dict()``.
"""
import time
from datetime import datetime

_IDLE = {
    # set by the user, read by processing and the denoiser
    "interrupted": False, "skipped": False, "stopping_generation": False,
    # the current job
    "job": "", "job_no": 0, "job_count": 0, "textinfo": None,
    # progress of the current sampling run
    "sampling_steps": 0, "sampling_step": 0,
    # live preview
    "current_latent": None, "current_image": None, "id_live_preview": 0, "current_image_sampling_step": 0,
}


class State:
    def __init__(self):
        self.server_start = time.time()
        self.time_start = None
        self.job_timestamp = "0"
        self._clear()

    def _clear(self):
        for attribute, value in _IDLE.items():
            setattr(self, attribute, value)

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def stop_generating(self):
        self.stopping_generation = True

    def begin(self, job: str = "(unknown)"):
        self._clear()
        self.job = job
        self.job_count = -1  # processing sets it to n_iter
        self.time_start = time.time()
        self.job_timestamp = datetime.now().strftime("%Y%m%d%H%M%S")

    def end(self):
        self.job, self.job_count = "", 0

    def nextjob(self):
        from modules import shared

        if shared.opts.live_previews_enable and shared.opts.show_progress_every_n_steps == -1:
            self.do_set_current_image()
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def set_current_image(self):
        """Decode the newest preview latent when ``show_progress_every_n_steps`` sampling steps have passed
        since the last preview (what the progress API calls on every poll)."""
        from modules import shared

        opts = shared.opts
        if not shared.parallel_processing_allowed or not opts.live_previews_enable:
            return
        every = opts.show_progress_every_n_steps
        if every != -1 and self.sampling_step - self.current_image_sampling_step >= every:
            self.do_set_current_image()

    def do_set_current_image(self):
        from modules import sd_samplers, shared

        if self.current_latent is None:
            return
        if shared.opts.show_progress_grid:
            self.assign_current_image(sd_samplers.samples_to_image_grid(self.current_latent))
        else:
            self.assign_current_image(sd_samplers.sample_to_image(self.current_latent))
        self.current_image_sampling_step = self.sampling_step

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1
