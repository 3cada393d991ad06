"""Stand-in for Forge 2 ``modules_forge/alter_samplers.py``: the "DDPM" sampler, a ``KDiffusionSampler`` subclass
(``AlterSampler``) running ``sample_ddpm``. The stand-in cannot sample with it (``NotImplementedError``)."""
from modules import sd_samplers_common, sd_samplers_kdiffusion


def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    raise NotImplementedError("the stand-in does not implement the DDPM sampler")


class AlterSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    def __init__(self, sd_model, sampler_name):
        self.sampler_name = sampler_name
        super().__init__(sample_ddpm, sd_model, None)


samplers_data_alter = [
    sd_samplers_common.SamplerData("DDPM", lambda model: AlterSampler(model, "ddpm"), ["ddpm"], {}),
]
