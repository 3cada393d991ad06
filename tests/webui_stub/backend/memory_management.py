"""Stand-in for Forge 2 ``backend/memory_management.py``, written for this project from reading it, not copied.

Forge's memory manager decides which ``ModelPatcher``s sit on the GPU. Reproduced as an extension can observe
it: ``load_models_gpu(models, ...)`` wraps each patcher in a ``LoadedModel`` (equal when they wrap the same
patcher); one already loaded moves to the front of ``current_loaded_models``; a new one first unloads loaded
clones of the same model without moving them (``unload_model_clones``), then ``free_memory`` runs, then it is
loaded (object patches on, moved to its ``load_device``, LoRA patches merged) and put in front.
``free_memory`` first drops "abandoned" entries (no one but the list holds their patcher) *without moving
their model* (so a module given to Forge through a patcher nobody keeps stays wherever it was), then, with
``ALWAYS_VRAM_OFFLOAD`` or ``vram_state == NO_VRAM``, unloads every other model on that device to its
``offload_device``. ``LoadedModel.model_unload()`` unpatches and moves the model to its offload device.
``vram_state`` (``VRAMState``) and ``ALWAYS_VRAM_OFFLOAD`` are module attributes a test may set (Forge sets
them from ``--always-low-vram``/``--always-no-vram``/``--always-offload-from-vram``).
Devices: everything is the CPU. Simplified: no memory estimates (free memory is "plenty", so nothing is unloaded for
room), no CPU-swap partial loading; an already loaded patcher's LoRA patches are refreshed on every load.
"""
import sys
from enum import Enum

import torch

cpu = gpu = torch.device("cpu")
signal_empty_cache = False


class VRAMState(Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


vram_state = VRAMState.NORMAL_VRAM
ALWAYS_VRAM_OFFLOAD = False
current_loaded_models: list = []


def get_torch_device():
    return gpu


def unet_offload_device():
    return gpu if vram_state == VRAMState.HIGH_VRAM else cpu


def unet_inital_load_device(parameters=0, dtype=None):  # sic: Forge's spelling
    return cpu


def text_encoder_device():
    return gpu


def text_encoder_offload_device():
    return cpu


def vae_device():
    return gpu


def vae_offload_device():
    return cpu


def get_free_memory(dev=None, torch_free_too=False):
    free = 1 << 40
    return (free, free) if torch_free_too else free


def soft_empty_cache(force=False):
    pass


def module_size(module):
    """Bytes held by a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def dtype_size(dtype):
    return torch.empty((), dtype=dtype).element_size()


class LoadedModel:
    def __init__(self, model):
        self.model = model
        self.device = model.load_device

    def model_load(self):
        self.model.forge_patch_model(self.device)
        self.model.refresh_loras()
        return self.model.model

    def model_unload(self, avoid_model_moving=False):
        self.model.forge_unpatch_model(None if avoid_model_moving else self.model.offload_device)

    def __eq__(self, other):
        return self.model is other.model


def unload_model_clones(model):
    for loaded in [m for m in current_loaded_models if model.is_clone(m.model)]:
        current_loaded_models.remove(loaded)
        loaded.model_unload(avoid_model_moving=True)


def free_memory(memory_required, device, keep_loaded=(), free_all=False):
    for loaded in list(current_loaded_models):
        if sys.getrefcount(loaded.model) <= 2:  # only the LoadedModel and getrefcount's argument hold it
            current_loaded_models.remove(loaded)
            loaded.model_unload(avoid_model_moving=True)
    if not (free_all or ALWAYS_VRAM_OFFLOAD or vram_state == VRAMState.NO_VRAM):
        return
    for loaded in list(current_loaded_models):
        if loaded.device == device and loaded not in keep_loaded:
            current_loaded_models.remove(loaded)
            loaded.model_unload()


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    wanted = [LoadedModel(patcher) for patcher in models]
    already = [m for m in wanted if m in current_loaded_models]
    for loaded in already:
        current_loaded_models.remove(loaded)
        current_loaded_models.insert(0, loaded)
        loaded.model.refresh_loras()  # simplified: Forge merges changed LoRAs when the UNet is refreshed
    to_load = [m for m in wanted if m not in already]
    for loaded in to_load:
        unload_model_clones(loaded.model)
    for device in {m.device for m in wanted}:
        if device != cpu:
            free_memory(memory_required, device, keep_loaded=already)
    for loaded in to_load:
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    free_memory(1e30, get_torch_device(), free_all=True)
