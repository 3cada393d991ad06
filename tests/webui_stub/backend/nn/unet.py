"""How Forge 2 runs an SD UNet with ``transformer_options`` (``backend/nn/unet.py``:
``IntegratedUNet2DConditionModel.forward``, ``TimestepEmbedSequential``, ``SpatialTransformer``,
``BasicTransformerBlock._forward``), as one function over the stand-in's ldm ``UNetModel``.

Forge's UNet has the same module tree and names as ldm's (``input_blocks`` / ``middle_block`` /
``output_blocks`` of ``TimestepEmbedSequential``s holding ``ResBlock``, ``SpatialTransformer``,
``Downsample``/``Upsample``; ``transformer_blocks[i].attn1/attn2/ff``), so the stand-in keeps the ldm
modules and walks them the Forge way in ``unet_forward(unet, x, timesteps, context, ...)``:

- ``transformer_options["original_shape"]`` = the input shape, ``["transformer_index"]`` = 0 and +1 after
  every ``SpatialTransformer``, ``["block"]`` = ``("input", i)`` / ``("middle", 0)`` / ``("output", i)`` /
  ``("last", 0)`` (around ``unet.out``), ``["block_index"]`` = the transformer block's index inside its
  ``SpatialTransformer``;
- ``block_modifiers``: ``fn(h, "before"|"after", transformer_options)`` around every block (and ``out``);
- ``block_inner_modifiers``: ``fn(h, "before"|"after", layer, layer_index, block, transformer_options)``
  around every layer of every block;
- ``patches``: ``input_block_patch`` / ``input_block_patch_after_skip`` (``fn(h, options)``),
  ``output_block_patch`` (``fn(h, skip, options) -> (h, skip)``), and per transformer block
  ``attn1_patch``/``attn2_patch`` (``fn(n, context, value, extra) -> (n, context, value)``),
  ``attn1_output_patch``/``attn2_output_patch`` (``fn(out, extra)``), ``middle_patch`` (``fn(x, extra)``);
- ``patches_replace["attn1"|"attn2"]``: looked up by ``(block_name, block_number, block_index)``, then by
  ``(block_name, block_number)``; a hit computes q/k/v with the module's ``to_q``/``to_k``/``to_v``,
  calls ``patch(q, k, v, extra)`` and applies ``to_out``. ``extra`` is ``transformer_options`` without
  the patches, plus ``n_heads`` and ``dim_head``;
- everything else runs the ldm modules' own forwards (``attn1(n)`` is called as a module, so hooks on it
  fire; ResBlocks, resamplers and ``out`` likewise).

With no patches or modifiers the result equals ldm's ``UNetModel.forward``.

In a Forge session the fixture calls ``install()``: ldm's ``UNetModel.forward`` (class attribute) becomes
``forge_forward`` — ``(x, timesteps=None, context=None, y=None, control=None, transformer_options=None,
**kwargs)`` → ``unet_forward`` — so the UNet is called as a module, as Forge calls its own UNet, and hooks
on ``diffusion_model`` fire; ``uninstall()`` puts ldm's forward back, ``ldm_forward(unet, ...)`` calls it.
SDXL: a UNet with ``num_classes`` adds ``label_emb(y)`` to the timestep embedding (``y`` = the condition's
``vector``, one row per batch row), as Forge's UNet does; ``Timestep(dim)`` is the sinusoidal embedder the
SDXL engine embeds the size/crop numbers with.
Not provided: ControlNet (``control`` must be None), ``group_norm_wrapper``, integer class labels.
"""
import torch
from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.openaimodel import TimestepBlock, UNetModel
from ldm.modules.diffusionmodules.util import timestep_embedding

from backend.attention import attention_function

_NOT_EXTRA = ("patches", "patches_replace")
_original_forward = {}  # "UNetModel" → ldm's forward while ``install()`` is in effect


def _call_modifiers(options, h, when):
    for modifier in options.get("block_modifiers", ()):
        h = modifier(h, when, options)
    return h


def _call_inner_modifiers(options, h, when, layer, layer_index, block):
    for modifier in options.get("block_inner_modifiers", ()):
        h = modifier(h, when, layer, layer_index, block, options)
    return h


def _patched(options, name, h, *more):
    """Run the ``patches[name]`` chain; single-valued patches return h, pair-valued ones (h, more)."""
    for patch in options.get("patches", {}).get(name, ()):
        result = patch(h, *more, options)
        h, more = (result, more) if not more else (result[0], result[1:])
    return (h, *more) if more else h


def _attention(attn, name, n, context, options, extra):
    """One attention of a transformer block, with its ``_patch`` / replacement / ``_output_patch``."""
    patches = options.get("patches", {})
    value = None
    if patches.get(f"{name}_patch"):
        context = n if context is None else context
        value = context
        for patch in patches[f"{name}_patch"]:
            n, context, value = patch(n, context, value, extra)

    replacements = options.get("patches_replace", {}).get(name, {})
    block = options.get("block")
    candidates = [] if block is None else [(block[0], block[1], options.get("block_index", 0)), block]
    replacement = next((replacements[key] for key in candidates if key in replacements), None)

    if replacement is not None:
        source = n if context is None else context
        q, k, v = attn.to_q(n), attn.to_k(source), attn.to_v(source if value is None else value)
        out = attn.to_out(replacement(q, k, v, extra))
    elif value is not None and value is not context:  # a patch gave separate keys and values
        q, k, v = attn.to_q(n), attn.to_k(context), attn.to_v(value)
        out = attn.to_out(attention_function(q, k, v, attn.heads))
    else:
        out = attn(n, context=context)

    for patch in patches.get(f"{name}_output_patch", ()):
        out = patch(out, extra)
    return out


def _transformer_block(block, x, context, options):
    extra = {key: value for key, value in options.items() if key not in _NOT_EXTRA}
    extra["n_heads"] = block.attn1.heads
    extra["dim_head"] = block.attn1.to_q.out_features // block.attn1.heads

    x = x + _attention(block.attn1, "attn1", block.norm1(x), context if block.disable_self_attn else None,
                       options, extra)
    for patch in options.get("patches", {}).get("middle_patch", ()):
        x = patch(x, extra)
    x = x + _attention(block.attn2, "attn2", block.norm2(x), context, options, extra)
    return x + block.ff(block.norm3(x))


def _spatial_transformer(st, x, context, options):
    batch, _, height, width = x.shape
    tokens = st.norm(x)
    if st.use_linear:
        tokens = st.proj_in(tokens.flatten(2).transpose(1, 2))
    else:
        tokens = st.proj_in(tokens).flatten(2).transpose(1, 2)
    contexts = context if isinstance(context, list) else [context] * len(st.transformer_blocks)
    for index, (block, own_context) in enumerate(zip(st.transformer_blocks, contexts)):
        options["block_index"] = index
        tokens = _transformer_block(block, tokens, own_context, options)
    if st.use_linear:
        image = st.proj_out(tokens).transpose(1, 2).reshape(batch, -1, height, width)
    else:
        image = st.proj_out(tokens.transpose(1, 2).reshape(batch, -1, height, width))
    return image + x


def _layer(layer, h, emb, context, options):
    if isinstance(layer, SpatialTransformer):
        h = _spatial_transformer(layer, h, context, options)
        if "transformer_index" in options:
            options["transformer_index"] += 1
        return h
    return layer(h, emb) if isinstance(layer, TimestepBlock) else layer(h)


def _block(block, h, emb, context, options):
    h = _call_modifiers(options, h, "before")
    for layer_index, layer in enumerate(block):
        h = _call_inner_modifiers(options, h, "before", layer, layer_index, block)
        h = _layer(layer, h, emb, context, options)
        h = _call_inner_modifiers(options, h, "after", layer, layer_index, block)
    return _call_modifiers(options, h, "after")


def unet_forward(unet, x, timesteps=None, context=None, y=None, control=None, transformer_options=None, **kwargs):
    """``unet`` (an ldm ``UNetModel``) on ``x`` the way Forge's UNet runs; ``transformer_options`` is
    written to (block names, indices) like Forge's."""
    if control is not None:
        raise NotImplementedError("ControlNet is not supported by the stand-in")
    if (y is not None) != (unet.num_classes is not None):
        raise ValueError("y must be given exactly when the UNet has num_classes (SDXL's vector)")
    if isinstance(unet.num_classes, int):
        raise NotImplementedError("integer class labels are not supported by the stand-in")
    options = {} if transformer_options is None else transformer_options
    options["original_shape"] = list(x.shape)
    options["transformer_index"] = 0

    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(x.dtype))
    if y is not None:
        emb = emb + unet.label_emb(y.to(emb.dtype))
    h = x.type(unet.dtype)
    skips = []
    for number, block in enumerate(unet.input_blocks):
        options["block"] = ("input", number)
        h = _patched(options, "input_block_patch", _block(block, h, emb, context, options))
        skips.append(h)
        h = _patched(options, "input_block_patch_after_skip", h)

    options["block"] = ("middle", 0)
    h = _block(unet.middle_block, h, emb, context, options)

    for number, block in enumerate(unet.output_blocks):
        options["block"] = ("output", number)
        h, skip = _patched(options, "output_block_patch", h, skips.pop())
        h = _block(block, torch.cat([h, skip], dim=1), emb, context, options)

    options["block"] = ("last", 0)
    h = _call_modifiers(options, h.type(x.dtype), "before")
    return _call_modifiers(options, unet.out(h), "after")


class Timestep(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


def forge_forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options=None, **kwargs):
    """``UNetModel.forward`` in a Forge session (see ``install``)."""
    return unet_forward(self, x, timesteps, context=context, y=y, control=control,
                        transformer_options=transformer_options, **kwargs)


def install():
    _original_forward.setdefault("UNetModel", UNetModel.forward)
    UNetModel.forward = forge_forward


def uninstall():
    if "UNetModel" in _original_forward:
        UNetModel.forward = _original_forward.pop("UNetModel")


def installed():
    return UNetModel.forward is forge_forward


def ldm_forward(unet, *args, **kwargs):
    """ldm's own ``UNetModel.forward`` (whether or not ``install`` replaced it)."""
    return _original_forward.get("UNetModel", UNetModel.forward)(unet, *args, **kwargs)
