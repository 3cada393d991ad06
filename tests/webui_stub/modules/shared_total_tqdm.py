"""Mirrors A1111 ``modules/shared_total_tqdm.py`` (``shared.total_tqdm``) without printing: it counts."""


class TotalTQDM:
    def __init__(self):
        self.total = None
        self.count = 0
        self.cleared = 0

    def reset(self):
        from modules import shared
        self.total = shared.state.job_count * shared.state.sampling_steps
        self.count = 0

    def update(self):
        self.count += 1

    def updateTotal(self, new_total):
        self.total = new_total

    def clear(self):
        self.cleared += 1
