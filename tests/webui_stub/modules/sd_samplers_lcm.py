"""Stand-in for A1111 ``modules/sd_samplers_lcm.py``: the "LCM" sampler, a ``KDiffusionSampler`` subclass
running ``sample_lcm``. Name, alias and options as in 1.10.1; its own denoiser (50 "original" timesteps) is
not modelled and ``sample_lcm`` raises ``NotImplementedError``."""
from modules import sd_samplers_common, sd_samplers_kdiffusion


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    raise NotImplementedError("the stand-in does not implement the LCM sampler")


class LCMSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    pass


samplers_lcm = [("LCM", sample_lcm, ["k_lcm"], {})]
samplers_data_lcm = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: LCMSampler(funcname, model), aliases,
                                   options)
    for label, funcname, aliases, options in samplers_lcm
]
