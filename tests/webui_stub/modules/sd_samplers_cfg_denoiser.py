"""Stand-in for A1111 ``modules/sd_samplers_cfg_denoiser.py``: ``CFGDenoiser``, the callable handed to a
k-diffusion sampler function as its model. Written for the tests from A1111's observable behaviour; it
keeps what extensions (and VideoElevator's A1111 backend) depend on and nothing else.

What one ``forward(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)`` call does here:

* an interrupted or skipped job raises ``sd_samplers_common.InterruptedException`` before any work;
* prompt editing: the conditioning schedules are resolved with ``self.step``, the number of calls made
  since ``Sampler.initialize`` reset it (not the sampler's step index);
* the model batch is laid out as [cond rows; uncond rows]: item i of ``x`` appears once per ``AND``
  sub-prompt of its prompt, then every item once more for the negative prompt (same for σ and
  ``image_cond``);
* ``on_cfg_denoiser`` callbacks get that batch and may replace x, σ, image_cond and both text tensors;
* when cond and uncond have the same token length the rows go to ``inner_model`` together
  (``opts.batch_cond_uncond``) or in slices of one row per item; when the lengths differ the cond rows
  go in slices (twice as large with ``batch_cond_uncond``) and the uncond rows in one extra call, unless
  ``opts.pad_cond_uncond`` pads the shorter one with empty-prompt chunks (reported as "Pad conds");
* ``on_cfg_denoised`` sees the raw model output, classifier-free guidance combines it
  (uncond + Σ weight·scale·(cond − uncond) per item), ``sampler.last_latent`` becomes the first cond
  row of each item and is stored as the live-preview latent, ``on_cfg_after_cfg`` may replace the
  result, and ``self.step`` advances.

Forge 2 host (``stub_host.is_forge()``), as Forge's ``CFGDenoiser.forward``: the same interrupt check and
prompt-editing reconstruction, then ``on_cfg_denoiser`` callbacks get the *unbatched* x (one row per
image; ``text_cond`` holds the sub-prompt rows, ``text_uncond`` one row per image), "skip early CFG" and
NGMS may set the scale to 1, and ``backend.sampling.sampling_function.sampling_function`` does the
batching and guidance (see there: Forge batches [uncond; cond] chunks as memory allows, the
``BATCHING`` knob). ``on_cfg_denoised`` is never called; ``sampler.last_latent`` and the preview are the
guided result; ``on_cfg_after_cfg`` may replace it; ``self.step`` advances.

Refiner: the stand-in has one checkpoint, so a refiner that is the loaded model is never switched to (as in
A1111); one that would be switched to raises ``NotImplementedError``.
SDXL: the text conditioning is a dict (``DictWithShape``: ``crossattn``, ``vector``); it is joined and sliced key
by key, padding touches ``crossattn`` only, and ``inner_model`` gets ``{**dict, "c_concat": [image_cond]}`` (A1111's
``make_condition_dict`` for dict conditioning) instead of ``{"c_crossattn": [t], "c_concat": [...]}``.
Not provided: edit (InstructPix2Pix) and unCLIP models, img2img masks, NGMS (``s_min_uncond`` is accepted and ignored), "skip early CFG", ``pad_cond_uncond_v0``,
the negative-prompt/combined live-preview choices and CFG++ bookkeeping.
"""
import torch

from modules import prompt_parser, sd_samplers_common, shared, stub_host
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)


def catenate_conds(conds):
    if not isinstance(conds[0], dict):
        return torch.cat(conds)
    return {key: torch.cat([cond[key] for cond in conds]) for key in conds[0]}


def subscript_cond(cond, a, b):
    if not isinstance(cond, dict):
        return cond[a:b]
    return {key: value[a:b] for key, value in cond.items()}


def _lengthen(context, tokens, filler):
    """``context`` (rows, T, C) extended to ``tokens`` with whole copies of ``filler`` (1, 77, C); a dict's
    ``crossattn`` only, in place (as A1111's ``pad_cond``)."""
    if isinstance(context, dict):
        context["crossattn"] = _lengthen(context["crossattn"], tokens, filler)
        return context
    chunks = (tokens - context.shape[1]) // filler.shape[1]
    if chunks <= 0:
        return context
    extra = filler.to(context).expand(context.shape[0], -1, -1).repeat(1, chunks, 1)
    return torch.cat([context, extra], dim=1)


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.p = None
        self.model_wrap = None  # built lazily by ``inner_model`` in the subclass
        self.step = 0  # denoiser calls since the sampler's ``initialize``
        self.steps = None  # the user's step count (set by ``launch_sampling``)
        self.total_steps = None  # expected number of calls for that step count
        self.padded_cond_uncond = False

    @property
    def inner_model(self):
        raise NotImplementedError()

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        """Classifier-free guidance over [cond rows; uncond rows]."""
        negative = x_out[x_out.shape[0] - uncond.shape[0]:]
        guided = negative.clone()
        for item, entries in enumerate(conds_list):
            for row, weight in entries:
                guided[item] = guided[item] + (weight * cond_scale) * (x_out[row] - negative[item])
        return guided

    def pad_cond_uncond(self, cond, uncond):
        """Both text tensors brought to the longer token length with empty-prompt chunks."""
        filler = shared.sd_model.cond_stage_model_empty_prompt
        tokens = max(cond.shape[1], uncond.shape[1])
        cond, uncond = _lengthen(cond, tokens, filler), _lengthen(uncond, tokens, filler)
        self.padded_cond_uncond = True
        return cond, uncond

    def _unet(self, x_in, sigma_in, image_cond_in, rows, context):
        if isinstance(context, dict):
            conditioning = {**context, "c_concat": [image_cond_in[rows]]}
        else:
            conditioning = {"c_crossattn": [context], "c_concat": [image_cond_in[rows]]}
        return self.inner_model(x_in[rows], sigma_in[rows], cond=conditioning)

    def _model_calls(self, n_items, cond, uncond):
        """(row slice, text context) for each ``inner_model`` call over the [cond; uncond] batch."""
        n_cond, n_total = cond.shape[0], cond.shape[0] + uncond.shape[0]
        together = shared.opts.batch_cond_uncond
        if cond.shape[1] == uncond.shape[1]:
            context = catenate_conds([cond, uncond])
            width = n_total if together else n_items
            return [(slice(start, min(start + width, n_total)), subscript_cond(context, start, start + width))
                    for start in range(0, n_total, width)]
        width = 2 * n_items if together else n_items
        calls = [(slice(start, min(start + width, n_cond)), subscript_cond(cond, start, start + width))
                 for start in range(0, n_cond, width)]
        calls.append((slice(n_cond, n_total), uncond))
        return calls

    def _refiner_due(self) -> bool:
        """A1111's ``apply_refiner`` test: past ``refiner_switch_at`` with a refiner that is not the loaded model."""
        p = self.p
        info = getattr(p, "refiner_checkpoint_info", None)
        if p is None or info is None or info == shared.sd_model.sd_checkpoint_info:
            return False
        return p.refiner_switch_at is None or self.step / self.total_steps >= p.refiner_switch_at

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        state = shared.state
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        if self._refiner_due():
            raise NotImplementedError("the stand-in cannot switch to a refiner checkpoint")
        if stub_host.is_forge():
            return self._forward_forge(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)

        conds_list, text_cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        text_uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)

        # which item of x each model row belongs to: one row per AND sub-prompt, then one per item
        owners = [item for item, entries in enumerate(conds_list) for _ in entries]
        owners += list(range(len(conds_list)))
        pick = torch.tensor(owners, device=x.device)
        x_in = x.index_select(0, pick)
        sigma_in = sigma.index_select(0, pick.to(sigma.device))
        image_cond_in = image_cond.index_select(0, pick.to(image_cond.device))

        before = CFGDenoiserParams(x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps,
                                   text_cond, text_uncond, self)
        cfg_denoiser_callback(before)
        x_in, image_cond_in, sigma_in = before.x, before.image_cond, before.sigma
        text_cond, text_uncond = before.text_cond, before.text_uncond

        self.padded_cond_uncond = False
        if shared.opts.pad_cond_uncond and text_cond.shape[1] != text_uncond.shape[1]:
            text_cond, text_uncond = self.pad_cond_uncond(text_cond, text_uncond)

        outputs = [self._unet(x_in, sigma_in, image_cond_in, rows, context)
                   for rows, context in self._model_calls(len(conds_list), text_cond, text_uncond)]
        x_out = torch.cat(outputs)

        cfg_denoised_callback(CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model))

        guided = self.combine_denoised(x_out, conds_list, text_uncond, cond_scale)

        leading_rows = [entries[0][0] for entries in conds_list]
        self.sampler.last_latent = x_out[leading_rows]
        sd_samplers_common.store_latent(self.sampler.last_latent)

        after = AfterCFGCallbackParams(guided, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)

        self.step += 1
        return after.x

    def _forge_cond_scale(self, cond_scale, s_min_uncond, sigma):
        """Forge's "skip early CFG" and NGMS: guidance scale 1 (no uncond pass) for some steps."""
        opts, notes = shared.opts, self.p.extra_generation_params
        if opts.skip_early_cond > 0 and self.step / self.total_steps <= opts.skip_early_cond:
            notes["Skip Early CFG"] = opts.skip_early_cond
            return 1.0
        if s_min_uncond > 0 and sigma[0] < s_min_uncond and (self.step % 2 or opts.s_min_uncond_all):
            notes["NGMS"] = s_min_uncond
            if opts.s_min_uncond_all:
                notes["NGMS all steps"] = True
            return 1.0
        return cond_scale

    def _forward_forge(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        from backend.sampling.sampling_function import sampling_function

        state = shared.state
        cond_composition, text_cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        text_uncond = None if uncond is None else prompt_parser.reconstruct_cond_batch(uncond, self.step)

        params = CFGDenoiserParams(x, image_cond, sigma, state.sampling_step, state.sampling_steps,
                                   text_cond, text_uncond, self)
        cfg_denoiser_callback(params)
        cond_scale = self._forge_cond_scale(cond_scale, s_min_uncond, sigma)
        denoised, _, _ = sampling_function(self, denoiser_params=params, cond_scale=cond_scale,
                                           cond_composition=cond_composition)

        self.sampler.last_latent = denoised
        sd_samplers_common.store_latent(denoised)
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x
