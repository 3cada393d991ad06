"""Stand-in for Forge 2 ``backend/modules/k_prediction.py``: the noise schedule of a discrete-time
ε- or v-prediction model, seen in σ-space (``KModel.predictor``).

``Prediction`` holds buffers ``alphas_cumprod``, ``sigmas`` (σ_t = √((1-ᾱ_t)/ᾱ_t), ascending) and
``log_sigmas``; ``set_sigmas(s)`` swaps the σ table (Forge's zero-terminal-SNR switch uses it, and it is
the place to change the σ→t mapping for a while). ``timestep(σ)`` is the index of the table entry
nearest in log σ (an integer, unlike A1111's interpolated ``CompVisDenoiser.sigma_to_t``); ``sigma(t)``
interpolates log σ between neighbouring entries. ``calculate_input`` scales by 1/√(σ²+σ_data²),
``calculate_denoised`` returns x − σ·ε (v-prediction: x·σ_d²/(σ²+σ_d²) − v·σ·σ_d/√(σ²+σ_d²)), ``noise_scaling`` multiplies the unit noise by σ (by √(1+σ²)
with ``max_denoise``) and adds the latent. ``sigma_min``/``sigma_max`` are properties (the table ends).
Only ``prediction_type`` "epsilon" and "v_prediction" with the scaled-linear β schedule are provided (SD1, SDXL).
"""
import torch


def rescale_zero_terminal_snr_sigmas(sigmas):
    """The σ table whose last ᾱ is (almost) 0, keeping the first (Lin et al. 2023, in √ᾱ)."""
    root = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alphas_bar = root * root
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar).sqrt()


def _per_sample(sigma, like):
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


class AbstractPrediction(torch.nn.Module):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon"):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise NotImplementedError(f"the stand-in only has ε- and v-prediction models, not {prediction_type!r}")
        self.sigma_data = sigma_data
        self.prediction_type = prediction_type

    def calculate_input(self, sigma, noise):
        return noise / (_per_sample(sigma, noise) ** 2 + self.sigma_data ** 2).sqrt()

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = _per_sample(sigma, model_output)
        if self.prediction_type == "v_prediction":
            total = sigma**2 + self.sigma_data**2
            return model_input * self.sigma_data**2 / total - model_output * sigma * self.sigma_data / total.sqrt()
        return model_input - model_output * sigma

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        scale = (1.0 + sigma ** 2.0).sqrt() if max_denoise else sigma
        return noise * scale + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class Prediction(AbstractPrediction):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon", beta_schedule="linear", linear_start=0.00085,
                 linear_end=0.012, timesteps=1000):
        super().__init__(sigma_data=sigma_data, prediction_type=prediction_type)
        if beta_schedule != "linear":
            raise NotImplementedError(f"beta schedule {beta_schedule!r} is not supported by the stand-in")
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.set_sigmas(((1 - alphas_cumprod) / alphas_cumprod).sqrt())

    def set_sigmas(self, sigmas):
        for name, table in (("sigmas", sigmas), ("log_sigmas", sigmas.log())):
            self.register_buffer(name, table.float())

    sigma_min = property(lambda self: self.sigmas[0], doc="the smallest σ of the table")
    sigma_max = property(lambda self: self.sigmas[-1], doc="the largest σ of the table")

    def timestep(self, sigma):
        """Index of the nearest table entry in log σ, shaped like ``sigma``."""
        wanted = sigma.log().to(self.log_sigmas.device).reshape(-1, 1)
        nearest = (wanted - self.log_sigmas[None, :]).abs().argmin(dim=1)
        return nearest.reshape(sigma.shape).to(sigma.device)

    def sigma(self, timestep):
        """σ at a (fractional) table index, log-linear between neighbours; clamped to the table."""
        t = timestep.float().to(self.log_sigmas.device).clamp(0, len(self.sigmas) - 1)
        below, above = t.floor().long(), t.ceil().long()
        log_sigma = torch.lerp(self.log_sigmas[below], self.log_sigmas[above], t - below)
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent):
        """σ ``percent`` of the way through sampling: "infinite" at the start, 0 at the end."""
        if not 0.0 < percent < 1.0:
            return 999999999.9 if percent <= 0.0 else 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


def k_prediction_from_diffusers_scheduler(scheduler):
    config = scheduler.config
    if getattr(config, "beta_schedule", None) != "scaled_linear":
        raise NotImplementedError(f"Failed to recognize {scheduler}")
    return Prediction(prediction_type=config.prediction_type, linear_start=config.beta_start,
                      linear_end=config.beta_end, timesteps=config.num_train_timesteps)
