"""The k-diffusion wrapper A1111 puts around a CompVis model (stand-in for k-diffusion's ``external.py``).

``CompVisDenoiser`` and ``CompVisVDenoiser`` are provided. It sees an ε-predicting ``LatentDiffusion`` (``apply_model(x, t, cond)``)
as a denoiser in the "x = x0 + σ·ε" parameterisation: the σ table comes from the model's ᾱ
(σ_t = √((1 - ᾱ_t)/ᾱ_t), ascending with t), continuous t ↔ σ goes by linear interpolation of log σ
between neighbouring table entries, and ``forward(x, σ)`` returns the x0 estimate ``x - σ·ε``. The
attributes A1111 and extensions touch keep k-diffusion's names: ``sigmas`` / ``log_sigmas`` (buffers, read
on every call, so a caller may swap them), ``inner_model``, ``quantize``, ``get_sigmas``,
``sigma_to_t``, ``t_to_sigma``, ``get_eps``. ``CompVisVDenoiser`` is the same for a v-predicting model
(σ_data = 1): ``get_v`` is ``apply_model``, and ``forward`` returns ``c_skip·x + c_out·v`` at the input scaled by ``c_in``
(``get_scalings``: c_skip = 1/(σ²+1), c_out = −σ/√(σ²+1), c_in = 1/√(σ²+1)).

``ForgeScheduleLinker(predictor)`` is the Forge 2 addition (Forge vendors k-diffusion with it): the sampler's
``model_wrap`` in Forge, a view of a ``backend.modules.k_prediction.Prediction``. ``sigmas`` /
``log_sigmas`` / ``sigma_min`` / ``sigma_max`` read the predictor's *current* table on every access (so
``predictor.set_sigmas`` shows through), ``sigma_to_t`` / ``t_to_sigma`` are the predictor's
``timestep`` / ``sigma``, and ``get_sigmas(n)`` is the uniform-in-t ladder like ``CompVisDenoiser``'s.
(Forge's own ``sigma_min``/``sigma_max`` call the predictor's properties and fail; these return them.)
"""
import torch
from torch import nn


class CompVisDenoiser(nn.Module):
    def __init__(self, model, quantize=False, device="cpu"):
        super().__init__()
        alphas_cumprod = model.alphas_cumprod
        sigma_table = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.register_buffer("sigmas", sigma_table)
        self.register_buffer("log_sigmas", sigma_table.log())
        self.inner_model = model
        self.quantize = quantize

    def get_sigmas(self, n):
        """``n`` σs for t evenly spaced from the last table index down to 0, followed by a final 0."""
        last_index = self.sigmas.shape[0] - 1
        ladder = self.t_to_sigma(torch.linspace(last_index, 0, n, device=self.sigmas.device))
        return torch.cat([ladder, ladder.new_zeros(1)])

    def sigma_to_t(self, sigma, quantize=None):
        """Fractional table index of ``sigma`` (or, when quantizing, the index of the nearest entry in log σ)."""
        table = self.log_sigmas
        wanted = sigma.to(table.device, table.dtype).log().reshape(-1)
        if self.quantize if quantize is None else quantize:
            nearest = (wanted[:, None] - table[None, :]).abs().argmin(dim=1)
            return nearest.reshape(sigma.shape).to(sigma.device)
        # the table entry at or just below each wanted value (kept inside the table so there is an upper neighbour)
        below = (torch.searchsorted(table, wanted, right=True) - 1).clamp(0, table.shape[0] - 2)
        lower, upper = table[below], table[below + 1]
        fraction = ((wanted - lower) / (upper - lower)).clamp(0, 1)
        return (below + fraction).reshape(sigma.shape).to(sigma.device)

    def t_to_sigma(self, t):
        """σ at a fractional table index: log σ interpolated linearly between the two neighbouring entries."""
        t = t.float()
        left = t.floor().long()
        right = t.ceil().long()
        return torch.lerp(self.log_sigmas[left], self.log_sigmas[right], t - left).exp()

    def get_eps(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def forward(self, input, sigma, **kwargs):
        """x0 estimate: scale the input to unit variance, predict ε at t(σ), subtract σ·ε."""
        per_sample = sigma.reshape(sigma.shape + (1,) * (input.ndim - sigma.ndim))
        eps = self.get_eps(input / (per_sample.square() + 1).sqrt(), self.sigma_to_t(sigma), **kwargs)
        return input - per_sample * eps


class CompVisVDenoiser(CompVisDenoiser):
    sigma_data = 1.0

    def get_scalings(self, sigma):
        total = sigma.square() + self.sigma_data**2
        return self.sigma_data**2 / total, -sigma * self.sigma_data / total.sqrt(), 1 / total.sqrt()

    def get_v(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def forward(self, input, sigma, **kwargs):
        c_skip, c_out, c_in = (s.reshape(sigma.shape + (1,) * (input.ndim - sigma.ndim)) for s in self.get_scalings(sigma))
        return self.get_v(input * c_in, self.sigma_to_t(sigma), **kwargs) * c_out + input * c_skip


class ForgeScheduleLinker(nn.Module):
    def __init__(self, predictor):
        super().__init__()
        self.predictor = predictor

    sigmas = property(lambda self: self.predictor.sigmas)
    log_sigmas = property(lambda self: self.predictor.sigmas.log())
    sigma_min = property(lambda self: self.predictor.sigma_min)
    sigma_max = property(lambda self: self.predictor.sigma_max)

    def get_sigmas(self, n=None):
        if n is None:
            ladder = self.sigmas.flip(0)
        else:
            ladder = self.t_to_sigma(torch.linspace(len(self.sigmas) - 1, 0, n, device=self.sigmas.device))
        return torch.cat([ladder, ladder.new_zeros(1)])

    def sigma_to_t(self, sigma, quantize=None):
        return self.predictor.timestep(sigma)

    def t_to_sigma(self, t):
        return self.predictor.sigma(t)
