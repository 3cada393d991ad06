"""The stand-in's checkpoint: a tiny model shaped like the ``ldm`` ``LatentDiffusion`` A1111 loads for SD1
(``shared.sd_model``; see A1111 ``modules/sd_models.py:load_model`` and ``sd_models_types.WebuiSdModel``).

- ``.model`` is a ``DiffusionWrapper`` (``conditioning_key = "crossattn"``) whose ``.diffusion_model``
  is a real ``ldm.modules.diffusionmodules.openaimodel.UNetModel`` (tiny; weights of the repo's tiny
  diffusers UNet via ``tests/ldm_helpers.ldm_unet_like``).
- ``apply_model(x, t, cond)`` → ``model(x, t, **cond)`` → ``diffusion_model(x, t, context=cat(c_crossattn))``
  (``c_concat`` is ignored for crossattn models, as in ldm).
- ``alphas_cumprod``: SD1's scaled-linear table (β from 0.00085 to 0.012, 1000 steps) as a float32
  buffer, and ``alphas_cumprod_original``.
- ``cond_stage_model``: A1111's ``FrozenCLIPEmbedderWithCustomWords`` behaviour without emphasis —
  the prompt is tokenized (the repo's tiny one-token-per-character CLIP tokenizer), split into
  chunks of 75 tokens, each chunk becomes ``[BOS] + tokens + [EOS]…`` (77), every prompt of a batch
  is padded to the same chunk count with empty chunks, the chunks' CLIP outputs are concatenated:
  ``[B, 77·k, 32]``; ``CLIP_stop_at_last_layers`` is honoured. ``.wrapped`` holds ``transformer`` and
  ``tokenizer`` (names the Lora stand-in uses).
- ``get_learned_conditioning(texts)``, ``decode_first_stage(z)`` (tiny diffusers VAE, ÷ scale_factor
  0.18215), ``encode_first_stage``/``get_first_stage_encoding``, ``ema_scope()``; flags ``is_sd1`` etc.,
  ``parameterization = "eps"``, ``cond_stage_key = "txt"``, ``latent_channels = 4``,
  ``sd_checkpoint_info``/``sd_model_hash``, ``cond_stage_model_empty_prompt``.

``build_tiny_forge_model`` builds the same parts (same seeds, so the same weights) into the Forge 2 engine
(``backend.diffusion_engine.sd15.StableDiffusion``); its text processing is the chunking encoder above.

SDXL (``build_tiny_sdxl_model``): the shape of the ``sgm.models.diffusion.DiffusionEngine`` A1111 1.10 loads for
an SDXL checkpoint, after ``sd_models_xl.extend_sdxl`` and the hijack: ``.model`` is sgm's ``OpenAIWrapper``
(``forward(x, t, c)`` → ``diffusion_model(x, timesteps=t, context=c["crossattn"], y=c["vector"])``, other keys
such as ``c_concat`` ignored) around the sgm-shaped UNet of ``tests/ldm_helpers.sgm_shaped_pair`` (no PyPI
package ships ``sgm``); ``.conditioner`` (also ``cond_stage_model``) is sgm's ``GeneralConditioner``: its
embedders' outputs go to ``"crossattn"`` (3-D, joined on the channels) or ``"vector"`` (2-D, joined on
the features), embedders whose ``input_key`` is in ``force_zero_embeddings`` give zeros. The embedders are
the two CLIP text encoders (penultimate hidden states in 75-token chunks; the second also gives its pooled
projection) and the size/crop embedders (``ConcatTimestepEmbedderND``: each number's sinusoidal embedding,
flattened). ``get_learned_conditioning(batch)`` is ``sd_models_xl.get_learned_conditioning``: the size from
``batch.width``/``height`` (1024 when missing), crop from ``opts.sdxl_crop_top/left``, zero text embeddings
for an all-empty negative prompt, a dict ``{"crossattn", "vector"}`` back. ``apply_model(x, t, cond)`` →
``model(x, t, cond)``; ``alphas_cumprod`` is SD's scaled-linear table (sgm's ``LegacyDDPMDiscretization``);
``parameterization`` "eps" (or "v" for a v-prediction checkpoint, given to the builder); ``scale_factor``
0.13025; ``is_sdxl`` True. ``build_tiny_forge_sdxl_model`` builds the same parts into Forge's
``backend.diffusion_engine.sdxl.StableDiffusionXL``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os

import torch
from torch import nn

from modules import devices, paths


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        self.name = os.path.basename(filename)
        self.name_for_extra = os.path.splitext(self.name)[0]
        self.model_name = self.name_for_extra
        self.sha256 = hashlib.sha256(self.name.encode()).hexdigest()
        self.hash = self.sha256[:8]
        self.shorthash = self.sha256[:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.model_name, self.name, self.title, self.short_title]
        self.metadata = {}

    def calculate_shorthash(self):
        return self.shorthash


class DiffusionWrapper(nn.Module):
    def __init__(self, diffusion_model, conditioning_key="crossattn"):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_concat: list = None, c_crossattn: list = None, c_adm=None):
        if self.conditioning_key != "crossattn":
            raise NotImplementedError(self.conditioning_key)
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class FrozenCLIPEmbedder(nn.Module):
    """ldm's text encoder holder: ``transformer`` (a transformers ``CLIPTextModel``) and ``tokenizer``."""

    def __init__(self, tokenizer, transformer):
        super().__init__()
        self.tokenizer = tokenizer
        self.transformer = transformer


class FrozenCLIPEmbedderWithCustomWords(nn.Module):
    chunk_length = 75

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped
        self.id_start = wrapped.tokenizer.bos_token_id
        self.id_end = wrapped.tokenizer.eos_token_id
        self.id_pad = self.id_end

    def tokenize_line(self, text):
        ids = self.wrapped.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        return [ids[i:i + self.chunk_length] for i in range(0, len(ids), self.chunk_length)] or [[]]

    def encode_with_transformers(self, tokens):
        from modules import shared
        clip_skip = shared.opts.CLIP_stop_at_last_layers
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=clip_skip > 1)
        if clip_skip > 1:
            return self.wrapped.transformer.text_model.final_layer_norm(outputs.hidden_states[-clip_skip])
        return outputs.last_hidden_state

    def forward(self, texts):
        batch_chunks = [self.tokenize_line(text) for text in texts]
        chunk_count = max(len(chunks) for chunks in batch_chunks)
        zs = []
        for i in range(chunk_count):
            rows = []
            for chunks in batch_chunks:
                chunk = chunks[i] if i < len(chunks) else []
                rows.append([self.id_start] + chunk + [self.id_end] * (self.chunk_length - len(chunk)) + [self.id_end])
            zs.append(self.encode_with_transformers(torch.tensor(rows).to(devices.device)))  # as A1111: to devices.device
        return torch.hstack(zs)


def sd1_alphas_cumprod(timesteps=1000, linear_start=0.00085, linear_end=0.012):
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class StubLatentDiffusion(nn.Module):
    def __init__(self, diffusion_model, first_stage_model, cond_stage_model, checkpoint_filename):
        super().__init__()
        self.model = DiffusionWrapper(diffusion_model)
        self.first_stage_model = first_stage_model
        self.cond_stage_model = cond_stage_model
        self.register_buffer("alphas_cumprod", sd1_alphas_cumprod())
        self.alphas_cumprod_original = self.alphas_cumprod
        self.num_timesteps = 1000
        self.scale_factor = 0.18215
        self.parameterization = "eps"
        self.cond_stage_key = "txt"
        self.conditioning_key = "crossattn"
        self.latent_channels = 4
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_ssd, self.is_sd3 = True, False, False, False, False
        self.is_sdxl_inpaint = False
        self.lowvram = False
        self.sd_checkpoint_info = CheckpointInfo(checkpoint_filename)
        self.sd_model_checkpoint = checkpoint_filename
        self.sd_model_hash = self.sd_checkpoint_info.calculate_shorthash()
        self.cond_stage_model_empty_prompt = None

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if not isinstance(cond, dict):
            cond = {"c_crossattn": cond if isinstance(cond, list) else [cond]}
        return self.model(x_noisy, t, **cond)

    def get_learned_conditioning(self, c):
        return self.cond_stage_model(c)

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor).sample

    @torch.no_grad()
    def encode_first_stage(self, x):
        return self.first_stage_model.encode(x).latent_dist

    def get_first_stage_encoding(self, encoder_posterior):
        z = encoder_posterior.sample() if hasattr(encoder_posterior, "sample") else encoder_posterior
        return self.scale_factor * z

    def ema_scope(self, context=None):
        return contextlib.nullcontext()


class FrozenCLIPEmbedderForSDXL(FrozenCLIPEmbedderWithCustomWords):
    """One SDXL text encoder as A1111 wraps it: 75-token chunks, the penultimate hidden states (no final
    layer norm); with ``return_pooled`` (the second encoder) also the first chunk's pooled projection."""

    input_key = "txt"

    def __init__(self, wrapped, return_pooled=False):
        super().__init__(wrapped)
        self.return_pooled = return_pooled

    def forward(self, texts):
        batch_chunks = [self.tokenize_line(text) for text in texts]
        hidden, pooled = [], None
        for i in range(max(len(chunks) for chunks in batch_chunks)):
            rows = []
            for chunks in batch_chunks:
                chunk = chunks[i] if i < len(chunks) else []
                rows.append([self.id_start] + chunk + [self.id_end] * (self.chunk_length - len(chunk)) + [self.id_end])
            outputs = self.wrapped.transformer(input_ids=torch.tensor(rows).to(devices.device), output_hidden_states=True)
            hidden.append(outputs.hidden_states[-2])
            if pooled is None and self.return_pooled:
                pooled = outputs.text_embeds
        return (torch.hstack(hidden), pooled) if self.return_pooled else torch.hstack(hidden)


class ConcatTimestepEmbedderND(nn.Module):
    """sgm's size/crop embedder: every number of a row embedded sinusoidally (``outdim`` wide), flattened."""

    def __init__(self, input_key, outdim):
        super().__init__()
        self.input_key, self.outdim = input_key, outdim

    def forward(self, x):
        from ldm.modules.diffusionmodules.util import timestep_embedding

        return timestep_embedding(x.flatten(), self.outdim).reshape(x.shape[0], -1)


class GeneralConditioner(nn.Module):
    OUTPUT_KEYS = {2: "vector", 3: "crossattn"}
    JOIN_DIMS = {"vector": 1, "crossattn": 2}

    def __init__(self, embedders):
        super().__init__()
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch, force_zero_embeddings=None):
        output = {}
        for embedder in self.embedders:
            with torch.no_grad():
                produced = embedder(batch[embedder.input_key])
            for embedding in produced if isinstance(produced, (tuple, list)) else (produced,):
                if embedder.input_key in (force_zero_embeddings or ()):
                    embedding = torch.zeros_like(embedding)
                key = self.OUTPUT_KEYS[embedding.dim()]
                output[key] = embedding if key not in output else torch.cat([output[key], embedding], self.JOIN_DIMS[key])
        return output


class OpenAIWrapper(nn.Module):
    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = "crossattn"  # set by sd_models_xl.extend_sdxl

    def forward(self, x, t, c, **kwargs):
        return self.diffusion_model(x, timesteps=t, context=c.get("crossattn"), y=c.get("vector"), **kwargs)


class StubDiffusionEngine(StubLatentDiffusion):
    """sgm's ``DiffusionEngine`` as A1111 1.10 uses an SDXL checkpoint (see the module docstring)."""

    def __init__(self, diffusion_model, first_stage_model, conditioner, checkpoint_filename, parameterization="eps"):
        super().__init__(diffusion_model, first_stage_model, conditioner, checkpoint_filename)
        self.model = OpenAIWrapper(diffusion_model)
        self.conditioner = conditioner
        self.scale_factor = 0.13025
        self.parameterization = parameterization
        self.is_sd1, self.is_sdxl = False, True

    def get_learned_conditioning(self, batch):
        from modules import shared

        opts = shared.opts
        width = getattr(batch, "width", 1024) or 1024
        height = getattr(batch, "height", 1024) or 1024
        negative = getattr(batch, "is_negative_prompt", False)
        aesthetic = opts.sdxl_refiner_low_aesthetic_score if negative else opts.sdxl_refiner_high_aesthetic_score
        rows = len(batch)

        def repeated(*values):
            return torch.tensor(values, device=devices.device, dtype=devices.dtype).repeat(rows, 1)

        conds = {"txt": batch, "original_size_as_tuple": repeated(height, width),
                 "crop_coords_top_left": repeated(opts.sdxl_crop_top, opts.sdxl_crop_left),
                 "target_size_as_tuple": repeated(height, width), "aesthetic_score": repeated(aesthetic)}
        all_empty = negative and all(text == "" for text in batch)
        return self.conditioner(conds, force_zero_embeddings=["txt"] if all_empty else [])

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        return self.model(x_noisy, t, cond)


class StubModelConfig:
    """Forge's ``estimated_config`` of the tiny checkpoint (``huggingface_guess``'s SD15 guess)."""
    huggingface_repo = "runwayml/stable-diffusion-v1-5"

    def inpaint_model(self):
        return False


def _tiny_parts(unet_config, seed):
    """The seeded tiny UNet, VAE and CLIP (identical for both hosts) and the checkpoint's file name."""
    from ldm_helpers import UNET_CONFIGS, diffusers_unet, ldm_unet_like
    from lib_elevator.tiny import tiny_text_encoder, tiny_tokenizer, tiny_vae

    config = UNET_CONFIGS[unet_config]
    unet = ldm_unet_like(diffusers_unet(config, seed), config).eval()
    tokenizer = tiny_tokenizer()
    clip = FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedder(tokenizer, tiny_text_encoder(tokenizer).eval()))
    filename = os.path.join(paths.models_path, "Stable-diffusion", f"{unet_config}-sd15.safetensors")
    vae, text_encoder = tiny_vae().eval(), clip
    for frozen in (vae, text_encoder):  # ldm and Forge freeze these; the UNet keeps requires_grad
        frozen.requires_grad_(False)
    return unet, vae, text_encoder, filename


def build_tiny_sd_model(unet_config: str = "tiny", seed: int = 1) -> StubLatentDiffusion:
    """Build the tiny checkpoint from the repo's seeded configs (nothing downloaded, ~0.3 s) and load it the
    way A1111's ``load_model`` does: to the device (``sd_models.send_model_to_device``, through ``lowvram``),
    then the empty prompt's conditioning."""
    from modules import sd_models

    unet, vae, clip, filename = _tiny_parts(unet_config, seed)
    model = StubLatentDiffusion(unet, vae, clip, filename).eval()
    sd_models.send_model_to_device(model)
    with torch.no_grad():
        model.cond_stage_model_empty_prompt = model.get_learned_conditioning([""])
    return model


def _tiny_sdxl_parts(seed):
    """The sgm-shaped UNet, VAE and both text encoders (each wrapped as A1111 wraps it) of the tiny SDXL checkpoint."""
    from ldm_helpers import sgm_shaped_pair
    from lib_elevator.tiny import tiny_text_encoder, tiny_tokenizer, tiny_vae

    _, unet = sgm_shaped_pair(seed)
    tokenizer = tiny_tokenizer()
    clip_l = FrozenCLIPEmbedderForSDXL(FrozenCLIPEmbedder(tokenizer, tiny_text_encoder(tokenizer, seed + 1).eval()))
    clip_g = FrozenCLIPEmbedderForSDXL(FrozenCLIPEmbedder(
        tokenizer, tiny_text_encoder(tokenizer, seed + 2, with_projection=True).eval()), return_pooled=True)
    vae = tiny_vae().eval()
    for frozen in (vae, clip_l, clip_g):
        frozen.requires_grad_(False)
    filename = os.path.join(paths.models_path, "Stable-diffusion", "sdxl_shaped.safetensors")
    return unet.eval(), vae, clip_l, clip_g, filename


def size_embedding_width(unet) -> int:
    """The width each size/crop number is embedded to (SDXL: 256): the UNet's vector minus the pooled text, over 6."""
    from lib_elevator.tiny import TEXT_DIM

    return (unet.label_emb[0][0].in_features - TEXT_DIM) // 6


def build_tiny_sdxl_model(seed: int = 21, parameterization: str = "eps") -> StubDiffusionEngine:
    """The tiny SDXL checkpoint loaded the A1111 1.10 way (see the module docstring)."""
    from modules import sd_models

    unet, vae, clip_l, clip_g, filename = _tiny_sdxl_parts(seed)
    width = size_embedding_width(unet)
    conditioner = GeneralConditioner([clip_l, clip_g] + [ConcatTimestepEmbedderND(key, width) for key in (
        "original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")])
    model = StubDiffusionEngine(unet, vae, conditioner, filename, parameterization).eval()
    sd_models.send_model_to_device(model)
    with torch.no_grad():
        model.cond_stage_model_empty_prompt = model.get_learned_conditioning([""])["crossattn"]
    return model


def build_tiny_forge_sdxl_model(seed: int = 21):
    """The same tiny SDXL checkpoint as a Forge 2 ``StableDiffusionXL`` engine."""
    from backend.diffusion_engine.sdxl import StableDiffusionXL

    unet, vae, clip_l, clip_g, filename = _tiny_sdxl_parts(seed)
    components = {"unet": unet, "vae": vae, "text_encoder": clip_l.wrapped, "text_encoder_2": clip_g.wrapped,
                  "tokenizer": clip_l.wrapped.tokenizer, "tokenizer_2": clip_g.wrapped.tokenizer,
                  "text_processing_engine_l": clip_l, "text_processing_engine_g": clip_g,
                  "size_embedding_width": size_embedding_width(unet)}
    model = StableDiffusionXL(StubModelConfig(), components)
    model.filename = model.sd_model_checkpoint = filename
    model.sd_checkpoint_info = CheckpointInfo(filename)
    model.sd_model_hash = model.sd_checkpoint_info.calculate_shorthash()
    return model


def build_tiny_forge_model(unet_config: str = "tiny", seed: int = 1):
    """The same tiny checkpoint loaded the Forge 2 way: a ``backend.diffusion_engine.sd15.StableDiffusion``
    (``forge_objects.unet.model.diffusion_model`` is the ldm UNet, same weights as ``build_tiny_sd_model``)
    with the stand-in's checkpoint fields (``sd_checkpoint_info``, ``sd_model_hash``, ``sd_model_checkpoint``,
    ``filename``)."""
    from backend.diffusion_engine.sd15 import StableDiffusion

    unet, vae, clip, filename = _tiny_parts(unet_config, seed)
    components = {"unet": unet, "vae": vae, "text_encoder": clip.wrapped, "tokenizer": clip.wrapped.tokenizer,
                  "text_processing_engine": clip}
    model = StableDiffusion(StubModelConfig(), components)
    model.filename = model.sd_model_checkpoint = filename
    model.sd_checkpoint_info = CheckpointInfo(filename)
    model.sd_model_hash = model.sd_checkpoint_info.calculate_shorthash()
    return model
