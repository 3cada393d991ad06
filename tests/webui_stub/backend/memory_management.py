"""Stand-in for Forge 2 ``backend/memory_management.py`` on a CPU-only machine.

Forge's memory manager decides which ``ModelPatcher``s sit on the GPU. Here every device is the CPU, so
what is left is what an extension can observe: ``load_models_gpu(models, ...)`` puts each patcher's
object patches on its model (``forge_patch_model``), moves it to its ``load_device``, merges its LoRA
patches (``refresh_loras``) and keeps it in ``current_loaded_models``; a patcher of the same model that
was loaded before is unpatched first. No offloading, no memory estimates; free memory is "plenty".
"""
import torch

cpu = torch.device("cpu")
signal_empty_cache = False
current_loaded_models: list = []


def get_torch_device():
    return cpu


def unet_offload_device():
    return cpu


def unet_inital_load_device(parameters=0, dtype=None):  # sic: Forge's spelling
    return cpu


def text_encoder_device():
    return cpu


def text_encoder_offload_device():
    return cpu


def vae_device():
    return cpu


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


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    for patcher in models:
        for earlier in [m for m in current_loaded_models if m.model is patcher.model and m is not patcher]:
            earlier.forge_unpatch_model()
            current_loaded_models.remove(earlier)
        patcher.forge_patch_model(patcher.load_device)
        patcher.refresh_loras()
        if patcher not in current_loaded_models:
            current_loaded_models.insert(0, patcher)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    for patcher in current_loaded_models:
        patcher.forge_unpatch_model(patcher.offload_device)
    current_loaded_models.clear()
