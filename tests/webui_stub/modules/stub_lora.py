"""Stand-in for A1111's built-in Lora extension (``extensions-builtin/Lora``) in its default
weight-patching mode. Written for this project, not copied; it reproduces what an extension that shares
the UNet with the WebUI has to live with:

- ``<lora:name:te:unet:dyn>`` tags (also ``te=``, ``unet=``, ``dyn=``): ``ExtraNetworkLora.activate``
  sets the global ``loaded_networks``; a job without tags empties it (the extra-networks machinery
  activates every registered network, with ``[]`` when unmentioned). Unknown names are reported as a
  "Lora not found" comment; "Lora hashes" goes into the infotext.
- ``install()`` swaps the *class* methods ``torch.nn.Linear.forward`` / ``torch.nn.Conv2d.forward``
  and their ``_load_from_state_dict``. Before each forward, a layer that has a ``network_layer_name``
  and whose ``network_current_names`` differ from the loaded networks' ``(name, te, unet, dyn)``
  tuples keeps a CPU copy of its original weight (``network_weights_backup``, taken once), restores
  it, and adds ``multiplier · alpha/rank · up @ down`` for each network **into ``weight`` in place**.
- ``assign_network_names_to_compvis_modules`` (an ``on_model_loaded`` callback) names every module of
  the text encoder and of ``sd_model.model`` by its dotted path with ``_``
  (``diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q``) and fills
  ``sd_model.network_layer_mapping``. Unnamed modules are never touched.
- Consequences kept on purpose: a LoRA is merged on a layer's first forward after activation and stays
  merged after the job; it is removed on the first forward after ``loaded_networks`` changes.
  ``load_state_dict`` into a layer forgets its backup.

Simplified: networks are registered in memory (``register_network`` / ``make_random_lora``), never
read from files; only ``Linear``/``Conv2d`` weights are patched (no bias, norm or attention-module
patching); no functional mode, no bundled embeddings, no LyCORIS types, no ``sd_lora`` option.
Test helpers: ``restore_all(sd_model)`` and ``uninstall()``.

Forge 2 host (``stub_host.is_forge()``), like Forge's built-in ``sd_forge_lora``: nothing is installed on the
torch classes and no names are assigned. ``activate`` compares the requested ``(name, te, unet, dyn)``
list with ``sd_model.current_lora_hash``; when it changed, ``forge_objects.unet``/``.clip`` become the
*original* patchers, cloned and given each network's layers as ``("lora", (up, down, alpha))`` patches
(``add_patches``, keyed by parameter name, strength = the unet/te multiplier), and
``forge_objects_after_applying_lora`` a shallow copy of the result. The weights change only when a
patcher is loaded (``sampling_prepare`` for the UNet, ``get_learned_conditioning`` for CLIP): the shared
model's patched parameters are replaced by merged copies and stay merged until a patcher with other
patches is loaded (``backend.patcher.lora``). "Lora not found" goes to ``sd_model.comments``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from modules import devices, extra_networks, script_callbacks, sd_hijack, shared, stub_host

available_networks: dict[str, NetworkOnDisk] = {}
loaded_networks: list[Network] = []
originals: dict | None = None  # {layer class: (forward, _load_from_state_dict)} while installed


@dataclass
class NetworkOnDisk:
    """A registered LoRA; ``layers`` = {network_layer_name: (up, down, alpha)}."""
    name: str
    layers: dict

    @property
    def shorthash(self):
        return hashlib.sha256(self.name.encode()).hexdigest()[:12]


@dataclass
class Network:
    """A LoRA as requested by one prompt tag."""
    network_on_disk: NetworkOnDisk
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None

    @property
    def name(self):
        return self.network_on_disk.name

    def state(self):
        return self.name, self.te_multiplier, self.unet_multiplier, self.dyn_dim

    def weight_delta(self, layer_name, weight):
        """This network's addition to ``weight`` of layer ``layer_name`` (``None`` if it has none)."""
        entry = self.network_on_disk.layers.get(layer_name)
        if entry is None:
            return None
        up, down, alpha = (x.to(weight.device, torch.float32) if torch.is_tensor(x) else x for x in entry)
        rank = down.shape[0]
        strength = self.te_multiplier if layer_name.startswith("transformer") else self.unet_multiplier
        if alpha is not None:
            strength = strength * alpha / rank
        return (up.flatten(1) @ down.flatten(1)).view(weight.shape) * strength


def register_network(name, layers):
    """Make a network available as ``<lora:name:...>``; ``layers`` = {network_layer_name: (up, down, alpha)}."""
    available_networks[name] = NetworkOnDisk(name, layers)
    return available_networks[name]


def make_random_lora(sd_model, name, rank=2, strength=0.1, seed=0, name_filter=None):
    """Register a random LoRA over the UNet's attention/transformer Linear and Conv2d layers.

    ``name_filter(network_layer_name) -> bool`` overrides the default choice (layers inside
    ``transformer_blocks`` plus the SpatialTransformers' ``proj_in``/``proj_out``).
    """
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for full_name, module in _unet_root(sd_model).named_modules():
        layer_name = full_name.replace(".", "_")
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        chosen = name_filter(layer_name) if name_filter else (
            ".transformer_blocks." in full_name or full_name.endswith((".proj_in", ".proj_out")))
        if not chosen:
            continue
        weight = module.weight
        down_shape = (rank,) + tuple(weight.shape[1:])
        up_shape = (weight.shape[0], rank) + (1,) * (weight.ndim - 2)
        down = torch.randn(down_shape, generator=generator) * strength
        up = torch.randn(up_shape, generator=generator) * strength
        layers[layer_name] = (up, down, float(rank))
    return register_network(name, layers)


def _unet_root(sd_model):
    """What A1111 names UNet layers from: ``sd_model.model`` (Forge: the ``KModel``, same names below it)."""
    return sd_model.forge_objects_original.unet.model if stub_host.is_forge() else sd_model.model


def assign_network_names_to_compvis_modules(sd_model):
    text_encoder = getattr(sd_model.cond_stage_model, "wrapped", sd_model.cond_stage_model)
    mapping = {}
    for root in (text_encoder, sd_model.model):
        for dotted, module in root.named_modules():
            module.network_layer_name = dotted.replace(".", "_")
            mapping[module.network_layer_name] = module
    sd_model.network_layer_mapping = mapping


# --- lazy merge into the layers -------------------------------------------------------------------


def _sync_layer(layer):
    """Bring ``layer.weight`` to original + the deltas of ``loaded_networks`` if it is not there yet."""
    layer_name = getattr(layer, "network_layer_name", None)
    if layer_name is None:
        return
    wanted = tuple(network.state() for network in loaded_networks)
    if getattr(layer, "network_current_names", ()) == wanted:
        return
    with torch.no_grad():
        backup = getattr(layer, "network_weights_backup", None)
        if backup is None:  # nothing is merged yet, so the live weight is the original
            layer.network_weights_backup = layer.weight.detach().to(devices.cpu, copy=True)
        else:
            layer.weight.copy_(backup)
        for network in loaded_networks:
            delta = network.weight_delta(layer_name, layer.weight)
            if delta is not None:
                layer.weight.add_(delta.to(layer.weight.dtype))
    layer.network_current_names = wanted


def _forget(layer):
    layer.network_current_names = ()
    layer.network_weights_backup = None


def network_Linear_forward(self, input):
    _sync_layer(self)
    return originals[torch.nn.Linear][0](self, input)


def network_Conv2d_forward(self, input):
    _sync_layer(self)
    return originals[torch.nn.Conv2d][0](self, input)


def _forgetting_loader(cls):
    def load_from_state_dict(self, *args, **kwargs):
        _forget(self)  # new weights: any backup is stale
        return originals[cls][1](self, *args, **kwargs)
    return load_from_state_dict


def install():
    """Patch the torch layer classes (idempotent)."""
    global originals
    if originals is not None:
        return
    originals = {cls: (cls.forward, cls._load_from_state_dict) for cls in (torch.nn.Linear, torch.nn.Conv2d)}
    torch.nn.Linear.forward = network_Linear_forward
    torch.nn.Conv2d.forward = network_Conv2d_forward
    for cls in originals:
        cls._load_from_state_dict = _forgetting_loader(cls)


def uninstall():
    global originals
    if originals is None:
        return
    for cls, (forward, loader) in originals.items():
        cls.forward = forward
        cls._load_from_state_dict = loader
    originals = None


def restore_all(sd_model):
    """Test helper: put every backed-up original weight back and forget the merge (A1111 does this lazily)."""
    if stub_host.is_forge():
        originals = sd_model.forge_objects_original
        for patcher in (originals.unet, originals.clip.patcher):
            patcher.lora_loader.refresh({}, force_refresh=True)
        sd_model.current_lora_hash = str([])
        return
    for module in [*sd_model.model.modules(), *sd_model.cond_stage_model.modules()]:
        backup = getattr(module, "network_weights_backup", None)
        if backup is not None:
            with torch.no_grad():
                module.weight.copy_(backup)
        if hasattr(module, "network_current_names"):
            _forget(module)


# --- the extra network ----------------------------------------------------------------------------


def _request(params):
    """``Network`` for one ``<lora:...>`` tag, or the name when it is not registered."""
    args, named = params.positional, params.named
    name = args[0]
    te = float(named.get("te", args[1] if len(args) > 1 else 1.0))
    unet = float(named.get("unet", args[2] if len(args) > 2 else te))
    dyn = named.get("dyn", args[3] if len(args) > 3 else None)
    if name not in available_networks:
        return name
    return Network(available_networks[name], te, unet, None if dyn is None else int(dyn))


class ExtraNetworkLora(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("lora")

    def activate(self, p, params_list):
        requests = [_request(params) for params in params_list]
        loaded_networks[:] = [r for r in requests if isinstance(r, Network)]
        missing = [r for r in requests if isinstance(r, str)]
        if stub_host.is_forge():
            _forge_load_networks(shared.sd_model, loaded_networks)
        if missing:
            comments = shared.sd_model.comments if stub_host.is_forge() else sd_hijack.model_hijack.comments
            comments.append(f"Lora not found: {', '.join(missing)}")
        if shared.opts.lora_add_hashes_to_infotext and loaded_networks:
            hashes = {n.name.replace(":", "").replace(",", ""): n.network_on_disk.shorthash for n in loaded_networks}
            p.extra_generation_params["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in hashes.items())

    def deactivate(self, p):
        pass  # merged weights stay until the next activation changes them


def _lora_patches(network, root, strip=""):
    """``network``'s layers found in ``root`` as Forge patches: {parameter name: ("lora", (up, down, alpha))}."""
    patches = {}
    for module_name, module in root.named_modules():
        layer_name = module_name.removeprefix(strip).replace(".", "_")
        entry = network.network_on_disk.layers.get(layer_name)
        if entry is not None and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            patches[f"{module_name}.weight"] = ("lora", tuple(entry))
    return patches


def _forge_load_networks(sd_model, networks):
    wanted = str([network.state() for network in networks])
    if sd_model.current_lora_hash == wanted:
        return
    sd_model.current_lora_hash = wanted
    unet, clip = sd_model.forge_objects_original.unet, sd_model.forge_objects_original.clip
    for network in networks:
        unet, clip = unet.clone(), clip.clone()
        unet.add_patches(filename=network.name, patches=_lora_patches(network, unet.model),
                         strength_patch=network.unet_multiplier)
        clip.add_patches(filename=network.name, patches=_lora_patches(network, clip.cond_stage_model, "clip_l."),
                         strength_patch=network.te_multiplier)
    sd_model.forge_objects.unet, sd_model.forge_objects.clip = unet, clip
    sd_model.forge_objects_after_applying_lora = sd_model.forge_objects.shallow_copy()


def register_callbacks():
    """``lora_script.py``'s callback registration (again after ``scripts.load_scripts`` clears callbacks;
    Forge's Lora registers none of this)."""
    if not stub_host.is_forge():
        script_callbacks.on_model_loaded(assign_network_names_to_compvis_modules)


def setup():
    """What the built-in extension's ``lora_script.py`` does at load: patch, register, name modules on load
    (Forge: only the registration)."""
    if not stub_host.is_forge():
        install()
    extra_networks.register_extra_network(ExtraNetworkLora())
    register_callbacks()
