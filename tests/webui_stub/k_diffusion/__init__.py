"""Stand-in for the parts of crowsonkb/k-diffusion A1111 1.10 uses (k-diffusion is not installed in CI),
written for these tests.

Only what eps-prediction SD1 models with the Euler / Euler a / DPM++ 2M samplers need:
``external.CompVisDenoiser`` (discrete ᾱ schedule, σ↔t by log-σ interpolation) and ``sampling``
(the three samplers, Karras / exponential σ schedules). Module layout and public names match k-diffusion
so WebUI code (``k_diffusion.external.CompVisDenoiser``, ``k_diffusion.sampling.torch = TorchHijack(p)``)
works unchanged. No tqdm progress bars.
"""
from . import external, sampling  # noqa: F401
