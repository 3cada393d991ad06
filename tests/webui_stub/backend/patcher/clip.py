"""Stand-in for Forge 2 ``backend/patcher/clip.py``: ``CLIP``, the text encoders of a checkpoint
(``forge_objects.clip``): ``cond_stage_model`` (a module with one attribute per encoder, e.g. ``clip_l``),
``tokenizer`` (same keys) and ``patcher`` (a ``ModelPatcher`` of ``cond_stage_model``, loaded before
encoding). ``clone()`` shares the modules and clones the patcher.
"""
from types import SimpleNamespace

import torch

from backend import memory_management
from backend.patcher.base import ModelPatcher


class JointTextEncoder(torch.nn.Module):
    def __init__(self, module_dict):
        super().__init__()
        for name, module in module_dict.items():
            setattr(self, name, module)


class CLIP:
    def __init__(self, model_dict=None, tokenizer_dict=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = JointTextEncoder(model_dict or {})
        self.tokenizer = SimpleNamespace(**(tokenizer_dict or {}))
        self.patcher = ModelPatcher(self.cond_stage_model, load_device=memory_management.text_encoder_device(),
                                    offload_device=memory_management.text_encoder_offload_device())

    def clone(self):
        twin = CLIP(no_init=True)
        twin.cond_stage_model, twin.tokenizer, twin.patcher = self.cond_stage_model, self.tokenizer, self.patcher.clone()
        return twin

    def add_patches(self, *args, **kwargs):
        return self.patcher.add_patches(*args, **kwargs)
