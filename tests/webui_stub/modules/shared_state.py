"""Stand-in for A1111 ``modules/shared_state.py`` (the object behind ``shared.state``), written for
these tests (no WebUI code in it).

Kept: the attribute names that the stand-in and the extension read or write (interrupt/skip/stop
flags, job name and counters, sampling step counters, the live-preview latent and image) and the
methods ``interrupt``, ``skip``, ``stop_generating`` (they only raise a flag; the CFG denoiser
checks the flags on its next call and raises ``InterruptedException``), ``begin`` (a fresh job:
every flag and counter cleared, ``job_count = -1`` until processing knows it), ``end``, ``nextjob``
and ``assign_current_image``.
Simplified: no server commands, no logging, no ``dict()``; ``nextjob`` does not decode a preview
(the stand-in's ``sd_samplers_common.store_latent`` assigns previews itself).
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
    "current_latent": None, "current_image": None, "id_live_preview": 0,
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
        self.job_no += 1
        self.sampling_step = 0

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1
