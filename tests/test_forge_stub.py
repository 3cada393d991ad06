"""The Forge 2 mode of the WebUI stand-in (``webui_stub(..., host="forge")``) behaves like
stable-diffusion-webui-forge 2.x where an extension can tell, and computes what the A1111 mode computes.

These pin the stand-in itself: the engine object and ``forge_objects``, the UNet traversal with
``transformer_options`` (patches, modifiers, block names), the cond/uncond batching knob, where
``process_before_every_sampling`` runs and which UNet patcher sampling then uses, the predictor's σ table,
and the final latents/images against the A1111 host for the same seed.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

from webui_stub_fixture import webui_stub


@pytest.fixture
def forge(tmp_path):
    with webui_stub(tmp_path, host="forge", unet_config="sd15_shaped") as session:
        yield session


def backend(name):
    return importlib.import_module(f"backend.{name}")


def always_on(webui, name="Probe", **hooks):
    """An AlwaysVisible script instance whose hooks are the given functions (``fn(p, *args, **kwargs)``)."""
    scripts = webui.scripts
    body = {"title": lambda self: name, "show": lambda self, is_img2img: scripts.AlwaysVisible}
    for hook, fn in hooks.items():
        body[hook] = lambda self, p, *args, _fn=fn, **kwargs: _fn(p, *args, **kwargs)
    return type(name, (scripts.Script,), body)()


def generate(webui, prompt, **fields):
    """Run txt2img; returns (the sampler's latents per batch, the images as float arrays, processed)."""
    latents = []
    recorder = always_on(webui, post_sample=lambda p, ps: latents.append(ps.samples.clone()))
    p = webui.txt2img(prompt, scripts=webui.runner(recorder), **fields)
    processed = webui.run(p)
    images = [np.asarray(image, dtype=np.float64) for image in processed.images[processed.index_of_first_image:]]
    return torch.cat(latents), images, processed


def unet_inputs(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=generator), torch.randn(batch, 77, 32, generator=generator)


# --- the model objects ----------------------------------------------------------------------------


def test_sd_model_is_a_forge_engine_with_forge_objects(forge):
    model, shared = forge.sd_model, forge.shared
    assert shared.sd_model is model and not hasattr(model, "model")
    assert (model.is_sd1, model.is_sd2, model.is_sdxl, model.is_sd3, model.is_inpaint) == (True, False, False, False, False)
    assert model.first_stage_model is None and model.cond_stage_model is None

    objects = model.forge_objects
    assert type(objects).__name__ == "ForgeObjects" and objects.clipvision is None
    copy = objects.shallow_copy()
    assert copy is not objects and (copy.unet, copy.clip, copy.vae) == (objects.unet, objects.clip, objects.vae)
    assert model.forge_objects_original.unet is objects.unet is model.forge_objects_after_applying_lora.unet

    unet = objects.unet
    assert isinstance(unet, backend("patcher.unet").UnetPatcher)
    assert isinstance(unet.model, backend("modules.k_model").KModel)
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    assert type(unet.model.diffusion_model) is UNetModel and forge.unet is unet.model.diffusion_model
    assert unet.model.storage_dtype == unet.model.computation_dtype == torch.float32
    predictor = unet.model.predictor
    assert predictor.prediction_type == "epsilon" and predictor.sigmas.shape == (1000,)
    assert torch.allclose(predictor.log_sigmas, predictor.sigmas.log())
    assert predictor.sigma_min == predictor.sigmas[0] and predictor.sigma_max == predictor.sigmas[-1]
    names = dict(forge.unet.named_modules())
    assert "input_blocks.1.1.transformer_blocks.0.attn1" in names and "middle_block.1.transformer_blocks.0.attn1" in names
    assert objects.vae.latent_channels == 4
    assert importlib.import_module("k_diffusion.external").ForgeScheduleLinker


def test_backend_is_not_importable_under_the_a1111_host(tmp_path):
    with webui_stub(tmp_path) as webui:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("backend")
        assert hasattr(webui.sd_model, "model")
    assert not any(name == "backend" or name.startswith("backend.") for name in sys.modules)


def test_patchers_clone_deep_copies_options_and_keep_the_sampling_extras(forge):
    unet = forge.sd_model.forge_objects.unet
    twin = unet.clone()
    assert twin.model is unet.model and twin.model_options is not unet.model_options

    extra = torch.nn.Linear(2, 2)
    wrapped = twin.add_extra_torch_module_during_sampling(extra)
    assert isinstance(wrapped, backend("patcher.base").ModelPatcher) and wrapped.model is extra
    twin.set_transformer_option("frames", 16)
    twin.append_transformer_option("tags", "a")
    twin.add_block_inner_modifier(print)
    twin.add_block_modifier(len)
    twin.set_model_sampler_post_cfg_function(abs)
    twin.set_model_sampler_cfg_function(lambda cond, uncond, scale: cond)
    twin.set_model_replace_all(max, "attn1")
    twin.set_model_attn1_patch(min)

    options = twin.model_options
    transformer = options["transformer_options"]
    assert transformer["frames"] == 16 and transformer["tags"] == ["a"]
    assert transformer["block_inner_modifiers"] == [print] and transformer["block_modifiers"] == [len]
    assert options["sampler_post_cfg_function"] == [abs]
    assert options["sampler_cfg_function"]({"cond": 1, "uncond": 2, "cond_scale": 3}) == 1
    assert len(transformer["patches_replace"]["attn1"]) == 3 * 16 * 16 and transformer["patches"]["attn1_patch"] == [min]
    assert unet.model_options == {"transformer_options": {}} and unet.extra_model_patchers_during_sampling == []

    third = twin.clone()
    assert third.extra_model_patchers_during_sampling == [wrapped]
    assert third.extra_model_patchers_during_sampling is not twin.extra_model_patchers_during_sampling
    assert third.model_options["transformer_options"]["tags"] is not transformer["tags"]


# --- the UNet traversal ---------------------------------------------------------------------------


def test_traversal_without_patches_equals_the_plain_ldm_forward(forge):
    unet_module = backend("nn.unet")
    kmodel = forge.sd_model.forge_objects.unet.model
    x, context = unet_inputs()
    sigma = kmodel.predictor.sigmas[[700, 100]]
    options = {}
    with torch.no_grad():
        timesteps = torch.tensor([700.0, 100.0])
        plain = unet_module.ldm_forward(forge.unet, x, timesteps, context=context)
        assert torch.equal(unet_module.unet_forward(forge.unet, x, timesteps, context=context,
                                                    transformer_options=options), plain)
        assert torch.equal(forge.unet(x, timesteps, context=context), plain)  # Forge's forward is installed
        assert options["block"] == ("last", 0) and options["original_shape"] == [2, 4, 8, 8]
        assert options["transformer_index"] == 16  # every SpatialTransformer of the SD1.5 layout

        eps = unet_module.ldm_forward(forge.unet, x / (sigma[:, None, None, None] ** 2 + 1).sqrt(),
                                                  timesteps, context=context)
        expected = x - sigma[:, None, None, None] * eps
        assert torch.allclose(kmodel.apply_model(x, sigma, c_crossattn=context, transformer_options={}), expected,
                              atol=1e-6)


def test_kmodel_calls_the_unet_as_a_module_and_the_ldm_forward_comes_back(tmp_path):
    calls = []
    with webui_stub(tmp_path, host="forge") as forge:
        from ldm.modules.diffusionmodules.openaimodel import UNetModel
        assert UNetModel.forward is backend("nn.unet").forge_forward
        handle = forge.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(sorted(kwargs)),
                                                      with_kwargs=True)
        forge.run(forge.txt2img(steps=2))
        handle.remove()
    assert calls == [["context", "control", "transformer_options"]] * 2  # one [uncond; cond] call per step
    assert UNetModel.forward.__module__ == "ldm.modules.diffusionmodules.openaimodel"


def test_attn1_replace_patch_and_inner_modifier_see_forge_transformer_options(forge):
    attention_function = backend("attention").attention_function
    unet = forge.sd_model.forge_objects.unet.clone()
    seen, inner = [], []

    def attn1(q, k, v, extra):
        seen.append(dict(extra))
        return attention_function(q, k, v, extra["n_heads"])  # what the module itself computes

    def modifier(h, when, layer, layer_index, block, options):
        inner.append((options["block"], layer_index, type(layer).__name__, when))
        return h

    unet.set_model_replace_all(attn1, "attn1")
    unet.add_block_inner_modifier(modifier)
    x, context = unet_inputs()
    sigma = unet.model.predictor.sigmas[[500, 500]]
    options = {**unet.model_options["transformer_options"], "cond_or_uncond": [1], "cond_indices": [],
               "uncond_indices": [0, 1]}
    with torch.no_grad():
        patched = unet.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
        plain = unet.model.apply_model(x, sigma, c_crossattn=context, transformer_options={})
    assert torch.allclose(patched, plain, atol=1e-5)

    blocks = [extra["block"] for extra in seen]
    assert blocks == [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0)] + [("output", i) for i in range(3, 12)]
    first = seen[0]
    assert first["block_index"] == 0 and first["transformer_index"] == 0 and seen[-1]["transformer_index"] == 15
    assert first["n_heads"] == 8 and first["dim_head"] == 4 and first["original_shape"] == [2, 4, 8, 8]
    assert first["cond_or_uncond"] == [1] and first["uncond_indices"] == [0, 1]
    assert "patches_replace" not in first and "patches" not in first
    assert inner[:4] == [(("input", 0), 0, "Conv2d", "before"), (("input", 0), 0, "Conv2d", "after"),
                         (("input", 1), 0, "ResBlock", "before"), (("input", 1), 0, "ResBlock", "after")]
    assert (("middle", 0), 1, "SpatialTransformer", "after") in inner
    assert (("output", 11), 0, "ResBlock", "before") in inner
    assert len(inner) == 2 * sum(len(b) for b in [*forge.unet.input_blocks, forge.unet.middle_block, *forge.unet.output_blocks])


def test_patches_and_modifiers_change_the_output(forge):
    unet = forge.sd_model.forge_objects.unet
    x, context = unet_inputs()
    sigma = unet.model.predictor.sigmas[[300, 300]]

    def run(patcher):
        with torch.no_grad():
            options = dict(patcher.model_options["transformer_options"])
            return patcher.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)

    plain = run(unet)
    zeroed = unet.clone()
    zeroed.set_model_attn1_replace(lambda q, k, v, extra: torch.zeros_like(q), "middle", 0, 0)
    doubled = unet.clone()
    doubled.add_block_inner_modifier(
        lambda h, when, layer, i, block, options: h * 2 if (options["block"], i, when) == (("output", 5), 1, "after") else h)
    block_level = unet.clone()
    block_level.add_block_modifier(lambda h, when, options: h + 1 if options["block"] == ("input", 3) and when == "after" else h)
    for changed in (zeroed, doubled, block_level):
        assert not torch.allclose(run(changed), plain, atol=1e-3)
    assert torch.equal(run(unet), plain)  # the clones' patches did not leak into the original


def test_predictor_set_sigmas_changes_the_timestep_apply_model_uses(forge):
    kmodel = forge.sd_model.forge_objects.unet.model
    predictor = kmodel.predictor
    linker = importlib.import_module("k_diffusion.external").ForgeScheduleLinker(predictor)
    x, context = unet_inputs(batch=1)
    original = predictor.sigmas.clone()
    sigma = original[[400]]
    assert predictor.timestep(sigma).tolist() == [400]

    def expected(t):
        scaled = x / (sigma ** 2 + 1).sqrt()
        return x - sigma * forge.unet(scaled, torch.tensor([float(t)]), context=context)

    with torch.no_grad():
        before = kmodel.apply_model(x, sigma, c_crossattn=context)
        assert torch.allclose(before, expected(400), atol=1e-6)
        predictor.set_sigmas(original / 2)  # σ_400 is now entry ≈ 2·σ_400's index
        try:
            moved = int(predictor.timestep(sigma))
            assert moved > 400 and torch.isclose(predictor.sigmas[moved], sigma[0], rtol=0.05)
            assert torch.equal(linker.sigmas, predictor.sigmas) and linker.sigma_to_t(sigma).item() == moved
            after = kmodel.apply_model(x, sigma, c_crossattn=context)
            assert torch.allclose(after, expected(moved), atol=1e-6) and not torch.allclose(after, before, atol=1e-4)
        finally:
            predictor.set_sigmas(original)
    assert torch.allclose(linker.t_to_sigma(torch.tensor([400.0])), sigma)
    assert linker.get_sigmas(4)[-1] == 0 and torch.isclose(linker.get_sigmas(4)[0], original[-1])


# --- cond/uncond batching -------------------------------------------------------------------------

EXPECTED_CALLS = {
    "together": [[1, 0]], "together_uncond_first": [[1, 0]], "together_cond_first": [[0, 1]],
    "separate": [[1], [0]], "separate_uncond_first": [[1], [0]], "separate_cond_first": [[0], [1]],
}


@pytest.mark.parametrize("mode", sorted(EXPECTED_CALLS))
def test_calc_cond_uncond_batch_gives_the_same_predictions_in_every_batching_mode(forge, monkeypatch, mode):
    sampling = backend("sampling.sampling_function")
    condition = backend("sampling.condition")
    unet = forge.sd_model.forge_objects.unet.clone()
    calls, patch_saw = [], []

    def wrapper(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def attn1(q, k, v, extra):
        patch_saw.append((extra["cond_or_uncond"], extra["cond_indices"], extra["uncond_indices"],
                          extra["cond_mark"].tolist(), tuple(extra["sigmas"].shape)))
        return backend("attention").attention_function(q, k, v, extra["n_heads"])

    unet.set_model_unet_function_wrapper(wrapper)
    unet.set_model_attn1_replace(attn1, "middle", 0, 0)
    x, text = unet_inputs()
    negative = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(5))
    sigma = unet.model.predictor.sigmas[[600, 600]]
    cond, uncond = condition.compile_conditions(text), condition.compile_conditions(negative)
    assert set(cond[0]) == {"cross_attn", "model_conds"} and isinstance(cond[0]["model_conds"]["c_crossattn"], condition.Condition)

    monkeypatch.setattr(sampling, "BATCHING", mode)
    with torch.no_grad():
        cond_pred, uncond_pred = sampling.calc_cond_uncond_batch(unet.model, cond, uncond, x, sigma, unet.model_options)
        expected_cond = unet.model.apply_model(x, sigma, c_crossattn=text, transformer_options={})
        expected_uncond = unet.model.apply_model(x, sigma, c_crossattn=negative, transformer_options={})
    assert torch.allclose(cond_pred, expected_cond, atol=1e-5) and torch.allclose(uncond_pred, expected_uncond, atol=1e-5)

    assert calls == EXPECTED_CALLS[mode]
    for kinds, (seen_kinds, cond_rows, uncond_rows, mark, sigma_shape) in zip(calls, patch_saw, strict=True):
        assert seen_kinds == kinds and sigma_shape == (2,)
        assert mark == [float(kind) for kind in kinds for _ in range(2)]
        assert cond_rows == [r for i, kind in enumerate(kinds) if kind == 0 for r in (2 * i, 2 * i + 1)]
        assert uncond_rows == [r for i, kind in enumerate(kinds) if kind == 1 for r in (2 * i, 2 * i + 1)]


def test_no_uncond_gives_zeros_and_cfg_scale_one_skips_it(forge):
    sampling, condition = backend("sampling.sampling_function"), backend("sampling.condition")
    unet = forge.sd_model.forge_objects.unet.clone()
    x, text = unet_inputs()
    sigma = unet.model.predictor.sigmas[[200, 200]]
    cond, uncond = condition.compile_conditions(text), condition.compile_conditions(text * 0)
    post = []

    def post_cfg(args):
        post.append(sorted(args))
        return args["denoised"] * 0 + 7

    with torch.no_grad():
        for empty in (None, []):
            cond_pred, uncond_pred = sampling.calc_cond_uncond_batch(unet.model, cond, empty, x, sigma, unet.model_options)
            assert torch.count_nonzero(uncond_pred) == 0
        result = sampling.sampling_function_inner(unet.model, x, sigma, uncond, cond, 1.0, unet.model_options)
        assert torch.allclose(result, cond_pred)
        unet.set_model_sampler_post_cfg_function(post_cfg)
        assert torch.all(sampling.sampling_function_inner(unet.model, x, sigma, uncond, cond, 5.0, unet.model_options) == 7)
    assert post == [sorted(["denoised", "cond", "uncond", "model", "uncond_denoised", "cond_denoised", "sigma",
                            "model_options", "input"])]


# --- processing -----------------------------------------------------------------------------------


CASES = {
    "plain": dict(prompt="a red cat", negative_prompt="blurry", batch_size=2),
    "and_prompt": dict(prompt="a red cat AND a dog:0.5", negative_prompt="", sampler_name="Euler a"),
    "long_prompt": dict(prompt="a very long prompt " * 6, negative_prompt="short", cfg_scale=5.0),
    "lora": dict(prompt="a cat <lora:tiny_lora:0.8>", negative_prompt="dog", n_iter=2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forge_txt2img_equals_the_a1111_host(tmp_path, case):
    """Same seed and prompt → the same latents and images on both hosts. Forge turns σ into the timestep of
    the *nearest* σ-table entry; A1111 interpolates unless "enable_quantization" is on, so the strict
    comparison is against A1111 with it on, and against A1111's defaults the latents differ by ~1e-4."""
    fields = dict(CASES[case])
    prompt = fields.pop("prompt")
    results = {}
    for run, host, quantize in (("forge", "forge", False), ("a1111", "a1111", True), ("a1111 default", "a1111", False)):
        with webui_stub(tmp_path / run.replace(" ", "_"), host=host, unet_config="sd15_shaped") as webui:
            webui.shared.opts.enable_quantization = quantize
            webui.stub_lora.make_random_lora(webui.sd_model, "tiny_lora", strength=0.3)
            results[run] = generate(webui, prompt, steps=3, seed=42, **fields)
            assert webui.errors == []
    f_latents, f_images, f_processed = results["forge"]
    a_latents, a_images, a_processed = results["a1111"]
    assert f_latents.shape == a_latents.shape and len(f_images) == len(a_images)
    assert torch.allclose(f_latents, a_latents, rtol=1e-4, atol=1e-4 * a_latents.abs().max().item())
    assert all(np.abs(f - a).max() <= 1.0 for f, a in zip(f_images, a_images))  # uint8 rounding at most
    forge_version, a1111_version = "Version: f2.0.1v1.10.1-previous-669-gdfdcbab6", "Version: v1.10.1"
    assert forge_version in f_processed.infotexts[-1]
    assert f_processed.infotexts[-1].replace(forge_version, a1111_version) == a_processed.infotexts[-1]
    default_latents = results["a1111 default"][0]
    assert ((f_latents - default_latents).norm() / default_latents.norm()).item() < 1e-3


def test_forge_sampling_path_calls_and_callbacks(forge):
    callbacks, kdiffusion = forge.script_callbacks, forge.sd_samplers_kdiffusion
    sampling = backend("sampling.sampling_function")
    seen = {"denoiser": [], "denoised": 0, "after": 0}
    callbacks.on_cfg_denoiser(lambda params: seen["denoiser"].append((params.x.shape[0], params.text_uncond.shape[0])))
    callbacks.on_cfg_denoised(lambda params: seen.__setitem__("denoised", seen["denoised"] + 1))
    callbacks.on_cfg_after_cfg(lambda params: seen.__setitem__("after", seen["after"] + 1))

    sampler_seen = {}

    def before_every_sampling(p, *args, **kwargs):
        sampler = p.sampler
        sampler_seen["wrap"] = type(sampler.model_wrap).__name__
        sampler_seen["inner"] = sampler.model_wrap.inner_model is forge.sd_model
        sampler_seen["linked"] = sampler.model_wrap_cfg.inner_model is sampler.model_wrap

    p = forge.txt2img(scripts=forge.runner(always_on(forge, process_before_every_sampling=before_every_sampling)),
                      batch_size=3, steps=4)
    processed = forge.run(p)
    assert len(processed.images) == 4 and isinstance(p.sampler, kdiffusion.KDiffusionSampler) is False  # closed
    assert sampler_seen == {"wrap": "ForgeScheduleLinker", "inner": True, "linked": True}
    assert seen == {"denoiser": [(3, 3)] * 4, "denoised": 0, "after": 4}
    assert sampling.LOADED == [forge.sd_model.forge_objects.unet]
    assert len(p.latents_after_sampling) == 3 and p.latents_after_sampling[0].shape == (4, 8, 8)
    assert forge.errors == []


def test_process_before_every_sampling_runs_after_the_reset_and_its_clone_is_sampled(forge):
    model = forge.sd_model
    sampling = backend("sampling.sampling_function")
    log, post_cfg_calls = [], []
    extra_module = torch.nn.Linear(3, 3)

    def process(p, *args):  # before the batches: lost in the per-batch reset
        stale = model.forge_objects.unet.clone()
        stale.set_model_sampler_post_cfg_function(lambda args: log.append("stale") or args["denoised"])
        model.forge_objects.unet = stale

    def process_batch(p, *args, **kwargs):
        log.append(("batch", model.forge_objects.unet is model.forge_objects_after_applying_lora.unet,
                    model.forge_objects is not model.forge_objects_after_applying_lora))
        model.forge_objects.unet = model.forge_objects.unet.clone()  # also lost: sample resets again

    def before_every_sampling(p, *args, **kwargs):
        log.append(("sampling", model.forge_objects.unet is model.forge_objects_after_applying_lora.unet,
                    p.sampler is not None, sorted(kwargs)))
        unet = model.forge_objects.unet.clone()
        unet.set_model_sampler_post_cfg_function(lambda args: post_cfg_calls.append(1) or args["denoised"])
        unet.add_extra_torch_module_during_sampling(extra_module)
        model.forge_objects.unet = unet
        log.append(unet)

    script = always_on(forge, process=process, process_batch=process_batch,
                       process_before_every_sampling=before_every_sampling)
    forge.run(forge.txt2img(scripts=forge.runner(script), steps=3, n_iter=2))

    assert "stale" not in log and len(post_cfg_calls) == 6
    assert log[0] == ("batch", True, True) and log[1] == ("sampling", True, True, ["c", "noise", "uc", "x"])
    last_clone = log[-1]
    assert sampling.LOADED[0] is last_clone and sampling.LOADED[1].model is extra_module
    assert model.forge_objects_original.unet is model.forge_objects_after_applying_lora.unet  # never changed
    assert forge.errors == []


def test_an_exception_in_process_before_every_sampling_is_reported_not_raised(forge):
    def broken(p, *args, **kwargs):
        raise RuntimeError("patching failed")

    processed = forge.run(forge.txt2img(scripts=forge.runner(always_on(forge, process_before_every_sampling=broken)),
                                        steps=2))
    assert len(processed.images) == 1
    assert len(forge.errors) == 1 and isinstance(forge.errors[0][1], RuntimeError)
    assert "process_before_every_sampling" in forge.errors[0][0]


def test_forge_lora_is_merged_when_the_unet_is_loaded_and_undone_by_a_job_without_it(forge):
    model = forge.sd_model
    forge.stub_lora.make_random_lora(model, "tiny_lora", strength=0.3)
    layer = forge.unet.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    original = layer.weight

    forge.run(forge.txt2img("a cat <lora:tiny_lora:1>", steps=2))
    assert layer.weight is not original and not torch.equal(layer.weight, original)
    assert model.forge_objects_after_applying_lora.unet is not model.forge_objects_original.unet
    assert model.forge_objects_after_applying_lora.unet.lora_patches

    forge.run(forge.txt2img("a cat", steps=2))
    assert layer.weight is original
    assert model.forge_objects_after_applying_lora.unet is model.forge_objects_original.unet
    assert forge.errors == []
