"""Stand-in for A1111 ``modules/sd_samplers_timesteps.py``: the samplers that work in timesteps rather than σ
(DDIM, DDIM CFG++, PLMS, UniPC), as ``SamplerData`` whose constructor makes a ``CompVisSampler`` — not a
``KDiffusionSampler``. Names, aliases and options as in 1.10.1; the stand-in cannot sample with them
(``sample`` raises ``NotImplementedError``)."""
from modules import sd_samplers_common

samplers_timesteps = [
    ("DDIM", "ddim", ["ddim"], {}),
    ("DDIM CFG++", "ddim_cfgpp", ["ddim_cfgpp"], {}),
    ("PLMS", "plms", ["plms"], {}),
    ("UniPC", "unipc", ["unipc"], {}),
]


class CompVisSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.eta_option_field, self.eta_infotext_field, self.eta_default = "eta_ddim", "Eta DDIM", 0.0

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError(f"the stand-in does not implement the {self.funcname} sampler")


samplers_data_timesteps = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: CompVisSampler(funcname, model), aliases,
                                   options)
    for label, funcname, aliases, options in samplers_timesteps
]
