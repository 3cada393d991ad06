"""Stand-in for A1111 ``modules/sd_samplers_extra.py``: the Restart sampler, with its signature only (the
stand-in cannot run it; calling it raises ``NotImplementedError``)."""


def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, restart_list=None):
    raise NotImplementedError("the stand-in does not implement the Restart sampler")
