"""Mirrors the parts of A1111 ``modules/sd_models.py`` processing uses.

``apply_token_merging(sd_model, ratio)`` records the ratio (``sd_model.applied_token_merged_ratio``
and the ``token_merging_calls`` log) instead of patching with tomesd; ``apply_alpha_schedule_override``
resets ``alphas_cumprod`` from ``alphas_cumprod_original`` before every batch, exactly as A1111 does;
``reload_model_weights`` does nothing (one model); ``model_data`` holds the loaded model;
``send_model_to_device`` / ``send_model_to_cpu`` go through ``lowvram`` as A1111's do (the fixture
calls the first when it "loads" the model).
Forge 2's ``forge_model_reload()`` returns ``(shared.sd_model, False)`` (nothing to reload); on Forge the
engine has no ``alphas_cumprod``, so ``apply_alpha_schedule_override`` does nothing there, as in Forge.
"""
import contextlib

from modules import devices, lowvram, shared

checkpoint_aliases = {}
token_merging_calls: list = []


class SdModelData:
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        shared.sd_model = v
        self.loaded_sd_models = [v] if v is not None else []
        self.was_loaded_at_least_once = v is not None


model_data = SdModelData()


def send_model_to_device(m):
    lowvram.apply(m)
    if not m.lowvram:
        m.to(shared.device)


def send_model_to_cpu(m):
    if m.lowvram:
        lowvram.send_everything_to_cpu()
    else:
        m.to(devices.cpu)


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    return shared.sd_model


def forge_model_reload():
    return shared.sd_model, False


def select_checkpoint():
    return getattr(shared.sd_model, "sd_checkpoint_info", None)


def get_closet_checkpoint_match(search_string):
    info = select_checkpoint()
    return info if info is not None and search_string in (info.title, info.name, info.model_name, info.short_title) else None


class SkipWritingToConfig(contextlib.nullcontext):
    pass


def apply_token_merging(sd_model, token_merging_ratio):
    token_merging_calls.append(token_merging_ratio)
    current = getattr(sd_model, "applied_token_merged_ratio", 0)
    if current == token_merging_ratio:
        return
    sd_model.applied_token_merged_ratio = token_merging_ratio


def apply_alpha_schedule_override(sd_model, p=None):
    if not hasattr(sd_model, "alphas_cumprod") or not hasattr(sd_model, "alphas_cumprod_original"):
        return
    sd_model.alphas_cumprod = sd_model.alphas_cumprod_original.to(shared.device)
    if shared.opts.use_downcasted_alpha_bar:
        if p is not None:
            p.extra_generation_params["Downcast alphas_cumprod"] = shared.opts.use_downcasted_alpha_bar
        sd_model.alphas_cumprod = sd_model.alphas_cumprod.half().to(shared.device)
    if shared.opts.sd_noise_schedule == "Zero Terminal SNR":
        raise NotImplementedError("Zero Terminal SNR is not supported by the stand-in")
