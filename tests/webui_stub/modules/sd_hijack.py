"""Mirrors the parts of A1111 ``modules/sd_hijack.py`` processing touches: ``model_hijack`` (comments and
extra infotext params collected during conditioning) and ``apply_optimizations``/``undo_optimizations``
(class-level replacement of ``CrossAttention.forward``; see ``sd_hijack_optimizations``).
No embeddings database, no CLIP hijack (the stand-in model's text encoder already chunks by 75 tokens).
"""
from modules import script_callbacks, sd_hijack_optimizations, shared

optimizers = []
current_optimizer = None


def list_optimizers():
    new = script_callbacks.list_optimizers_callback()
    sd_hijack_optimizations.list_optimizers(new)
    optimizers.clear()
    optimizers.extend(sorted((x for x in new if x.is_available()), key=lambda x: x.priority, reverse=True))


def apply_optimizations(option=None):
    """Apply ``option`` (a title, "Automatic" → the highest priority, "None" → none); returns its name."""
    global current_optimizer
    undo_optimizations()
    if not optimizers:
        list_optimizers()
    selection = option or shared.opts.cross_attention_optimization
    if selection == "None":
        return ""
    if selection == "Automatic":
        matching = optimizers[0] if optimizers else None
    else:
        matching = next((x for x in optimizers if x.title() == selection or x.name == selection), optimizers[0])
    if matching is None:
        return ""
    matching.apply()
    current_optimizer = matching
    return matching.name


def undo_optimizations():
    global current_optimizer
    if current_optimizer is not None:
        current_optimizer.undo()
        current_optimizer = None


class StableDiffusionModelHijack:
    def __init__(self):
        self.comments = []
        self.extra_generation_params = {}
        self.optimization_method = None
        self.circular_enabled = False

    def apply_optimizations(self, option=None):
        self.optimization_method = apply_optimizations(option)

    def undo_optimizations(self):
        undo_optimizations()
        self.optimization_method = None

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}

    def apply_circular(self, enable):
        if enable:
            raise NotImplementedError("tiling is not supported by the stand-in")
        self.circular_enabled = enable


model_hijack = StableDiffusionModelHijack()
