"""Stand-in for A1111 ``modules/rng.py`` (written for this project, not copied): seeded per-image noise.

Behaviour reproduced: ``ImageRNG(shape, seeds, ...)`` keeps one CPU ``torch.Generator`` per seed. The
first ``next()`` gives each image the noise its seed gives in a single-image run (image i of a batch
equals a batch of one with seed i) and, as the WebUI does, re-seeds the global torch RNG with the seed;
if ``eta_noise_seed_delta`` is set, the generators are then re-seeded with ``seed + delta``. Later
``next()`` calls continue the per-image generators (ancestral samplers' noise via ``TorchHijack``).
Simplified: CPU generators only (the "GPU"/"CPU"/"NV" sources are all the same here); variation seeds
(``subseed_strength`` != 0) and "resize seed from" raise ``NotImplementedError``.
"""
import torch

from modules import devices, shared


def _generator(seed):
    return torch.Generator(devices.cpu).manual_seed(int(seed))


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        if subseed_strength:
            raise NotImplementedError("variation seeds are not supported by the stand-in")
        if seed_resize_from_h > 0 and seed_resize_from_w > 0:
            raise NotImplementedError("'resize seed from' is not supported by the stand-in")
        self.shape = tuple(int(n) for n in shape)
        self.seeds = list(seeds)
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.generators = [_generator(seed) for seed in self.seeds]
        self.is_first = True

    def _draw(self):
        return torch.stack([torch.randn(self.shape, generator=g, device=devices.cpu) for g in self.generators])

    def first(self):
        if self.seeds:
            torch.manual_seed(int(self.seeds[-1]))  # where the WebUI leaves the global RNG after a batch
        noise = self._draw()
        delta = shared.opts.eta_noise_seed_delta or 0
        if delta:
            self.generators = [_generator(seed + delta) for seed in self.seeds]
        return noise.to(shared.device)

    def next(self):
        """The first call is ``first()``; each later one continues every image's generator."""
        noise = self.first() if self.is_first else self._draw().to(shared.device)
        self.is_first = False
        return noise
