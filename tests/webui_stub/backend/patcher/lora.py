"""Stand-in for Forge 2 ``backend/patcher/lora.py``: merging LoRA patches into a model's weights.

Forge keeps LoRA patches on the patcher (``ModelPatcher.lora_patches``) and merges them only when the
patcher is loaded for use: ``LoraLoader.refresh`` puts every backed-up original weight back, then, for each
patched parameter, replaces it with a *new* ``nn.Parameter`` (``requires_grad=False``) holding
original·strength_model + strength·Δ. The model is shared by every clone of the patcher, so whatever
was merged last stays in the weights until a patcher with other patches is loaded.

Patch types kept: ``("lora", (up, down, alpha, ...))`` (Δ = alpha/rank · up @ down) and ``("diff", (Δ,))``.
Not provided: LoCon mid weights, LoHa/LoKr/GLoRA, "set", offsets and functions, online (unmerged) LoRA.
"""
import torch


def _delta(kind, value, weight):
    if kind == "diff":
        return value[0].to(weight)
    if kind != "lora":
        raise NotImplementedError(f"LoRA patch type {kind!r} is not supported by the stand-in")
    up, down, alpha = value[0].float(), value[1].float(), value[2]
    scale = 1.0 if alpha is None else alpha / down.shape[0]
    return (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * scale


def merge_lora_to_weight(patches, weight, key="online_lora", computation_dtype=torch.float32):
    """``weight`` with ``patches`` ([strength, (type, value), strength_model, offset, function], ...) merged."""
    merged = weight.to(computation_dtype, copy=True)
    for strength, (kind, value), strength_model, *_ in patches:
        if strength_model != 1.0:
            merged *= strength_model
        merged += strength * _delta(kind, value, merged).to(merged)
    return merged.to(weight.dtype)


def _owner(model, key):
    """(module holding parameter ``key``, attribute name)."""
    path, _, name = key.rpartition(".")
    return (model.get_submodule(path) if path else model), name


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}  # parameter key → the original Parameter object
        self.online_backup = []
        self.loaded_hash = str([])

    def refresh(self, lora_patches, offload_device=None, force_refresh=False):
        wanted = str(list(lora_patches.keys()))
        if wanted == self.loaded_hash and not force_refresh:
            return
        for key, original in self.backup.items():
            module, name = _owner(self.model, key)
            setattr(module, name, original)
        self.backup = {}

        by_key = {}
        for patches in lora_patches.values():
            for key, entries in patches.items():
                by_key.setdefault(key, []).extend(entries)
        for key, entries in by_key.items():
            module, name = _owner(self.model, key)
            original = getattr(module, name)
            self.backup[key] = original
            with torch.no_grad():
                setattr(module, name, torch.nn.Parameter(merge_lora_to_weight(entries, original.detach()),
                                                         requires_grad=False))
        self.loaded_hash = wanted
