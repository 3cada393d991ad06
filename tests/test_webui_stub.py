"""The WebUI stand-in (tests/webui_stub) behaves like AUTOMATIC1111 1.10.1 where an extension can tell.

These pin the stand-in itself, so that extension tests built on it test against A1111's behaviour:
processing order and script-hook arguments, CFG batching, step counting and prompt editing,
interrupt/skip, in-place LoRA patching, samplers/schedules, infotext, settings/command line, clean-up.
"""
from __future__ import annotations

import importlib
import os
import sys
import textwrap

import numpy as np
import torch

from webui_stub_fixture import STUB_DIR, webui, webui_stub  # noqa: F401  (webui: the fixture)


def unet_calls(webui):
    """Record (rows, context) of every UNet forward; returns (records, hook handle)."""
    records = []

    def hook(module, args, kwargs):
        records.append((args[0].shape[0], kwargs["context"].detach().clone()))

    return records, webui.unet.register_forward_pre_hook(hook, with_kwargs=True)


def encode(webui, prompt):
    with torch.no_grad():
        return webui.sd_model.get_learned_conditioning([prompt])[0]


class _Control:
    def __init__(self, value):
        self.value = value


def hook_recorder(webui, log, name="Recorder", controls=(True, 3)):
    """An AlwaysVisible script logging every hook with the script args it got."""
    scripts = webui.scripts

    class Recorder(scripts.Script):
        def title(self):
            return name

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            return [webui.ui_components.InputAccordion(controls[0], label="Enable")] + [_Control(v) for v in controls[1:]]

        def before_process(self, p, *args):
            log.append(("before_process", args))

        def process(self, p, *args):
            log.append(("process", args))

        def before_process_batch(self, p, *args, **kwargs):
            log.append(("before_process_batch", args, kwargs))

        def after_extra_networks_activate(self, p, *args, **kwargs):
            log.append(("after_extra_networks_activate", args))

        def process_batch(self, p, *args, **kwargs):
            log.append(("process_batch", args, kwargs))

        def process_before_every_sampling(self, p, *args, **kwargs):
            log.append(("process_before_every_sampling", args, sorted(kwargs)))

        def post_sample(self, p, ps, *args):
            log.append(("post_sample", args, tuple(ps.samples.shape)))

        def postprocess_batch(self, p, *args, **kwargs):
            log.append(("postprocess_batch", args, kwargs))

        def postprocess_batch_list(self, p, pp, *args, **kwargs):
            log.append(("postprocess_batch_list", args, len(pp.images), kwargs))

        def postprocess_image(self, p, pp, *args):
            log.append(("postprocess_image", args))

        def postprocess(self, p, processed, *args):
            log.append(("postprocess", args, len(processed.images)))

    return Recorder


# --- processing ---------------------------------------------------------------------------------


def test_txt2img_batch_of_three_with_euler_gives_three_decoded_images(webui):
    p = webui.txt2img("a red cat", negative_prompt="blurry", batch_size=3, steps=3, seed=100)
    processed = webui.run(p)

    frames = processed.images[processed.index_of_first_image:]
    assert len(frames) == 3
    assert all(image.size == (64, 64) and image.mode == "RGB" for image in frames)
    assert processed.index_of_first_image == 1 and processed.images[0].size == (128, 128)  # A1111's grid first
    assert processed.all_seeds == [100, 101, 102]
    assert len({image.tobytes() for image in frames}) == 3
    assert processed.infotexts[1] == (
        "a red cat\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, "
        f"Seed: 100, Size: 64x64, Model hash: {webui.sd_model.sd_model_hash}, Model: tiny-sd15, Version: v1.10.1")
    assert frames[0].info["parameters"] == processed.infotexts[1]
    samples_dir = webui.data_dir / "outputs" / "txt2img-images"
    assert sorted(f.name for f in samples_dir.iterdir()) == ["00000-100.png", "00001-101.png", "00002-102.png"]
    assert [f.name for f in (webui.data_dir / "outputs" / "txt2img-grids").iterdir()] == ["grid-0000.png"]
    assert (webui.data_dir / "params.txt").read_text().startswith("a red cat\n")
    assert webui.shared.total_tqdm.count == 3
    assert webui.errors == []


def test_noise_is_per_seed_like_a_single_image_run(webui):
    rng = webui.rng.ImageRNG((4, 8, 8), [7, 8])
    noise = rng.next()
    alone = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(8))
    assert torch.equal(noise[1], alone)


def test_hooks_run_in_a1111_order_with_their_script_args(webui):
    log = []
    other = hook_recorder(webui, [], name="Other", controls=("x",))
    runner = webui.runner(other(), hook_recorder(webui, log)())
    assert [(s.args_from, s.args_to) for s in runner.alwayson_scripts] == [(1, 2), (2, 4)]
    p = webui.txt2img(scripts=runner, script_args=[0, "x", True, 5], batch_size=2, n_iter=2, steps=2, seed=10)
    webui.run(p)

    names = [entry[0] for entry in log]
    per_batch = ["before_process_batch", "after_extra_networks_activate", "process_batch",
                 "process_before_every_sampling", "post_sample", "postprocess_batch", "postprocess_batch_list",
                 "postprocess_image", "postprocess_image"]
    assert names == ["before_process", "process"] + per_batch * 2 + ["postprocess"]
    assert all(entry[1] == (True, 5) for entry in log)
    first_batch = log[2][2]
    assert first_batch["batch_number"] == 0 and first_batch["seeds"] == [10, 11] and first_batch["prompts"] == ["a cat"] * 2
    assert log[5][2] == ["c", "noise", "uc", "x"]
    assert log[6][2] == (2, 4, 8, 8)
    images = log[7][2]["images"]
    assert images.shape == (2, 3, 64, 64) and 0 <= images.min() and images.max() <= 1
    assert log[8][2] == 2 and log[8][3] == {"batch_number": 0}
    assert log[-1][2] == 5  # grid + 4 images
    assert webui.errors == []


def test_a_failing_hook_is_reported_and_generation_goes_on(webui):
    scripts = webui.scripts

    class Broken(scripts.Script):
        def title(self):
            return "Broken"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_batch(self, p, *args, **kwargs):
            raise ValueError("boom")

    p = webui.txt2img(scripts=webui.runner(Broken()), steps=2)
    processed = webui.run(p)
    assert len(processed.images) == 1
    assert len(webui.errors) == 1 and isinstance(webui.errors[0][1], ValueError)


def test_a_script_can_wrap_p_sample_and_plug_in_its_own_sampler_function(webui):
    scripts, sd_samplers, kdiffusion = webui.scripts, webui.sd_samplers, webui.sd_samplers_kdiffusion
    k_sampling = importlib.import_module("k_diffusion.sampling")
    seen = {"wrapper": 0, "func": []}

    def custom_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        seen["func"].append((type(model).__name__, sorted(extra_args), len(sigmas)))
        return k_sampling.sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)

    class WrapsSample(scripts.Script):  # what sd-webui-animatediff's FreeInit and a VideoElevator-style hook do
        def title(self):
            return "Wrapper"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def before_process(self, p, *args):
            original_sample = p.sample

            def wrapped(*a, **kw):
                seen["wrapper"] += 1
                original_create = sd_samplers.create_sampler

                def create(name, model):
                    sampler = kdiffusion.KDiffusionSampler(custom_sampler, model)
                    sampler.config = sd_samplers.find_sampler_config("Euler")
                    return sampler

                sd_samplers.create_sampler = create
                try:
                    return original_sample(*a, **kw)
                finally:
                    sd_samplers.create_sampler = original_create

            p.sample = wrapped

    p = webui.txt2img(scripts=webui.runner(WrapsSample()), n_iter=2, steps=3)
    processed = webui.run(p)
    assert seen["wrapper"] == 2
    assert seen["func"] == [("CFGDenoiserKDiffusion", ["cond", "cond_scale", "image_cond", "s_min_uncond", "uncond"], 4)] * 2
    assert len(processed.images) == 3


def test_alphas_cumprod_is_reset_from_the_original_before_every_batch(webui):
    scripts = webui.scripts
    seen = []

    class ChangesSchedule(scripts.Script):
        def title(self):
            return "Schedule"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process_batch(self, p, *args, **kwargs):
            p.sd_model.alphas_cumprod = p.sd_model.alphas_cumprod * 0.5

        def process_before_every_sampling(self, p, *args, **kwargs):
            seen.append(p.sampler.model_wrap.sigmas.clone())

    original = webui.sd_model.alphas_cumprod.clone()
    webui.run(webui.txt2img(scripts=webui.runner(ChangesSchedule()), steps=2))
    assert torch.equal(webui.sd_model.alphas_cumprod, original)
    assert torch.allclose(seen[0], ((1 - original) / original) ** 0.5)


def test_token_merging_ratio_is_applied_and_reset(webui):
    p = webui.txt2img(steps=2)
    p.token_merging_ratio = 0.5
    processed = webui.run(p)
    assert webui.sd_models.token_merging_calls == [0.5, 0]
    assert "Token merging ratio: 0.5" in processed.infotexts[0]


# --- CFG denoiser -------------------------------------------------------------------------------


def test_cfg_batches_cond_then_uncond_in_one_unet_call(webui):
    calls, handle = unet_calls(webui)
    denoiser_params, denoised_params, after = [], [], []
    webui.script_callbacks.on_cfg_denoiser(
        lambda prm: denoiser_params.append((prm.x.clone(), prm.text_cond.clone(), prm.text_uncond.clone(),
                                            prm.sampling_step, prm.denoiser.step, prm.total_sampling_steps)))
    webui.script_callbacks.on_cfg_denoised(lambda prm: denoised_params.append(prm.x.clone()))
    webui.script_callbacks.on_cfg_after_cfg(lambda prm: after.append(prm.x.clone()))
    p = webui.txt2img("a cat", negative_prompt="a dog", batch_size=2, steps=3, cfg_scale=5.0)
    webui.processing.process_images(p)
    handle.remove()

    assert [rows for rows, _ in calls] == [4, 4, 4]
    cond, uncond = encode(webui, "a cat"), encode(webui, "a dog")
    context = calls[0][1]
    for row, expected in enumerate([cond, cond, uncond, uncond]):
        torch.testing.assert_close(context[row], expected)
    x_in, text_cond, text_uncond, _, _, total = denoiser_params[0]
    assert x_in.shape == (4, 4, 8, 8) and torch.equal(x_in[:2], x_in[2:])
    assert text_cond.shape == (2, 77, 32) and text_uncond.shape == (2, 77, 32) and total == 3
    assert [entry[4] for entry in denoiser_params] == [0, 1, 2]  # denoiser.step counts calls
    assert [entry[3] for entry in denoiser_params] == [0, 0, 1]  # state.sampling_step lags one call (A1111)
    x_out = denoised_params[0]
    torch.testing.assert_close(after[0], x_out[2:] + 5.0 * (x_out[:2] - x_out[2:]))

    sampler = p.sampler
    assert sampler.model_wrap is sampler.model_wrap_cfg.inner_model
    assert type(sampler.model_wrap).__name__ == "CompVisDenoiser"


def test_without_batch_cond_uncond_the_unet_runs_per_half(webui):
    webui.shared.opts.batch_cond_uncond = False
    calls, handle = unet_calls(webui)
    webui.run(webui.txt2img(batch_size=2, steps=2))
    handle.remove()
    assert [rows for rows, _ in calls] == [2, 2, 2, 2]


def test_long_prompt_runs_cond_and_uncond_separately_unless_padded(webui):
    long_prompt = "x" * 80  # one token per character here: two 75-token chunks
    calls, handle = unet_calls(webui)
    webui.run(webui.txt2img(long_prompt, batch_size=2, steps=1))
    assert [(rows, context.shape[1]) for rows, context in calls] == [(2, 154), (2, 77)]
    calls.clear()
    webui.shared.opts.pad_cond_uncond = True
    processed = webui.run(webui.txt2img(long_prompt, batch_size=2, steps=1))
    handle.remove()
    assert [(rows, context.shape[1]) for rows, context in calls] == [(4, 154)]
    assert "Pad conds: True" in processed.infotexts[1]


def test_and_prompts_add_a_cond_row_and_weight_it(webui):
    conds_lists, rows = [], []
    original = webui.prompt_parser.reconstruct_multicond_batch

    def spy(c, step):
        result = original(c, step)
        conds_lists.append(result[0])
        return result

    webui.prompt_parser.reconstruct_multicond_batch = spy
    webui.script_callbacks.on_cfg_denoiser(lambda prm: rows.append(prm.x.shape[0]))
    webui.run(webui.txt2img("a cat AND a dog:0.5", steps=1))
    assert conds_lists == [[[(0, 1.0), (1, 0.5)]]]
    assert rows == [3]


def test_prompt_editing_switches_at_the_right_denoiser_step(webui):
    schedules = webui.prompt_parser.get_learned_conditioning_prompt_schedules
    assert schedules(["a [cat:dog:0.5] here"], 10) == [[[5, "a cat here"], [10, "a dog here"]]]
    assert schedules(["[cat:3]", "[cat::3]", "[a|b]"], 4) == [
        [[3, ""], [4, "cat"]], [[3, "cat"], [4, ""]], [[1, "a"], [2, "b"], [3, "a"], [4, "b"]]]
    assert schedules(["[(a:2):3]", "a [b : c : 1] d"], 10) == [  # A1111's own doctest cases
        [[3, ""], [10, "(a:2)"]], [[1, "a b  d"], [10, "a  c  d"]]]
    assert schedules(["[a|(b:1.1)]"], 3) == [[[1, "a"], [2, "(b:1.1)"], [3, "a"]]]

    seen = []
    webui.script_callbacks.on_cfg_denoiser(lambda prm: seen.append((prm.denoiser.step, prm.text_cond[0].clone())))
    webui.run(webui.txt2img("a [cat:dog:0.5]", steps=10))
    cat, dog = encode(webui, "a cat"), encode(webui, "a dog")
    assert [step for step, _ in seen] == list(range(10))
    which = ["cat" if torch.allclose(c, cat) else "dog" if torch.allclose(c, dog) else "?" for _, c in seen]
    assert which == ["cat"] * 6 + ["dog"] * 4  # entry used while step <= 5


# --- interrupt / skip ---------------------------------------------------------------------------


def test_interrupt_during_sampling_stops_and_returns(webui):
    state = webui.shared.state
    steps_seen = []

    def interrupt_at_step_one(params):
        steps_seen.append(params.denoiser.step)
        if params.denoiser.step == 1:
            state.interrupt()

    webui.script_callbacks.on_cfg_denoiser(interrupt_at_step_one)
    calls, handle = unet_calls(webui)
    processed = webui.run(webui.txt2img(batch_size=2, n_iter=2, steps=6))
    handle.remove()

    assert steps_seen == [0, 1] and len(calls) == 2  # the call that saw the flag raised before the UNet
    assert len(processed.images[processed.index_of_first_image:]) == 2  # the 2nd batch never started
    assert not (webui.data_dir / "outputs" / "txt2img-images").exists()  # interrupted images are not saved
    assert state.interrupted


def test_skip_ends_the_current_batch_only(webui):
    state = webui.shared.state
    calls = []

    def skip_first_batch(params):
        calls.append(params.denoiser.p.iteration)
        if params.denoiser.p.iteration == 0 and params.denoiser.step == 0:
            state.skip()

    webui.script_callbacks.on_cfg_denoiser(skip_first_batch)
    processed = webui.run(webui.txt2img(n_iter=2, steps=3))
    assert calls == [0, 1, 1, 1]
    assert len(processed.images) == 3  # grid + one image per batch
    assert not state.skipped


# --- LoRA ---------------------------------------------------------------------------------------


def test_lora_is_merged_in_place_stays_after_the_job_and_is_undone_by_the_next(webui):
    pristine = {k: v.clone() for k, v in webui.unet.state_dict().items()}
    network = webui.stub_lora.make_random_lora(webui.sd_model, "tiny", rank=2, strength=0.2)
    layer_name = "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    assert layer_name in network.layers
    layer = webui.sd_model.network_layer_mapping[layer_name]
    storage = layer.weight.data_ptr()
    up, down, alpha = network.layers[layer_name]

    plain = webui.run(webui.txt2img("a cat", steps=2))
    p = webui.txt2img("a cat <lora:tiny:0.8>", steps=2)
    with_lora = webui.run(p)

    assert p.prompts == ["a cat "]
    assert f'Lora hashes: "tiny: {network.shorthash}"' in with_lora.infotexts[0]
    assert layer.weight.data_ptr() == storage  # same tensor, new values
    torch.testing.assert_close(layer.weight, pristine["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"]
                               + 0.8 * (up @ down) * (alpha / 2))
    assert torch.equal(layer.network_weights_backup, pristine["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"])
    assert plain.images[0].tobytes() != with_lora.images[0].tobytes()

    again = webui.run(webui.txt2img("a cat", steps=2))
    assert all(torch.equal(v, pristine[k]) for k, v in webui.unet.state_dict().items())
    assert again.images[0].tobytes() == plain.images[0].tobytes()


def test_lora_restore_all_helper_and_uninstall(webui):
    lora = webui.stub_lora
    pristine = {k: v.clone() for k, v in webui.unet.state_dict().items()}
    lora.make_random_lora(webui.sd_model, "tiny")
    webui.run(webui.txt2img("<lora:tiny:1>", steps=1))
    assert not all(torch.equal(v, pristine[k]) for k, v in webui.unet.state_dict().items())
    lora.restore_all(webui.sd_model)
    assert all(torch.equal(v, pristine[k]) for k, v in webui.unet.state_dict().items())
    assert torch.nn.Linear.forward is lora.network_Linear_forward
    lora.uninstall()
    assert torch.nn.Linear.forward is not lora.network_Linear_forward


# --- samplers, schedules, k-diffusion -----------------------------------------------------------


def test_compvis_denoiser_and_schedules(webui):
    k_external = importlib.import_module("k_diffusion.external")
    ac = webui.sd_model.alphas_cumprod
    denoiser = k_external.CompVisDenoiser(webui.sd_model)
    torch.testing.assert_close(denoiser.sigmas, ((1 - ac) / ac) ** 0.5)
    t = torch.tensor([0.0, 10.5, 999.0])
    torch.testing.assert_close(denoiser.sigma_to_t(denoiser.t_to_sigma(t)), t, atol=1e-3, rtol=0)
    sigmas = denoiser.get_sigmas(4)
    assert len(sigmas) == 5 and sigmas[-1] == 0
    torch.testing.assert_close(sigmas[0], denoiser.sigmas[-1])

    class Eps:
        alphas_cumprod = ac

        def apply_model(self, x, t, cond):
            return torch.full_like(x, 0.5)

    x, sigma = torch.ones(1, 4, 2, 2), torch.tensor([2.0])
    out = k_external.CompVisDenoiser(Eps())(x, sigma, cond=None)
    torch.testing.assert_close(out, x - 0.5 * 2.0)

    p = webui.txt2img(steps=4)
    sampler = webui.sd_samplers.create_sampler("Euler", webui.sd_model)
    torch.testing.assert_close(sampler.get_sigmas(p, 4), sampler.model_wrap.get_sigmas(4))
    p.scheduler = "Karras"
    karras = sampler.get_sigmas(p, 4)
    assert p.extra_generation_params["Schedule type"] == "Karras"
    torch.testing.assert_close(karras[[0, -2]], torch.stack([denoiser.sigmas[-1], denoiser.sigmas[0]]))


def test_sampler_names_and_default_schedulers(webui):
    sd_samplers = webui.sd_samplers
    assert len(sd_samplers.all_samplers) == 20 and {"Euler", "Euler a", "DPM++ 2M"} <= set(sd_samplers.all_samplers_map)
    assert sd_samplers.find_sampler_config("Heun").total_steps(4) == 8  # prompt schedules over 2N steps
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", None, convert_automatic=False) == ("DPM++ 2M", "Karras")
    processed = webui.run(webui.txt2img(sampler_name="DPM++ 2M", steps=3))
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in processed.infotexts[0]
    ancestral = webui.run(webui.txt2img(sampler_name="Euler a", steps=3))
    assert ancestral.images[0].tobytes() == webui.run(webui.txt2img(sampler_name="Euler a", steps=3)).images[0].tobytes()


def test_ddim_schedule_type_takes_every_nth_table_entry_from_index_1(webui):
    """1.10.1's "DDIM" schedule: table entries 1, 1+s, … (s = ⌊1000/n⌋), so 30 steps give 31."""
    sampler = webui.sd_samplers.create_sampler("Euler", webui.sd_model)
    p = webui.txt2img(steps=20, scheduler="DDIM")
    table = sampler.model_wrap.sigmas
    torch.testing.assert_close(sampler.get_sigmas(p, 20)[:-1], table[list(range(951, 0, -50))])
    assert len(sampler.get_sigmas(p, 30)) == 32


# --- infotext, settings, command line, attention, clean-up --------------------------------------


def test_infotext_quotes_values_with_commas_and_parses_back(webui):
    p = webui.txt2img(steps=2)
    p.extra_generation_params["VideoElevator"] = "frames: 8, fps: 8"
    processed = webui.run(p)
    assert 'VideoElevator: "frames: 8, fps: 8"' in processed.infotexts[0]
    pasted = []
    webui.script_callbacks.on_infotext_pasted(lambda text, params: pasted.append(params["VideoElevator"]))
    params = webui.infotext_utils.paste(processed.infotexts[0])
    assert params["VideoElevator"] == "frames: 8, fps: 8" and params["Size-1"] == "64" and params["Prompt"] == "a cat"
    assert pasted == ["frames: 8, fps: 8"]


def test_ui_calls_are_wrapped_like_a1111(webui):
    call_queue, state = webui.call_queue, webui.shared.state
    seen = []

    def generate(id_task, prompt):
        seen.append((state.job, state.job_count))
        state.interrupt()
        return [prompt.upper(), "<p>done</p>"]

    outputs = call_queue.wrap_gradio_gpu_call(generate, extra_outputs=[None])("task(abc)", "a cat")
    assert seen == [("task(abc)", -1)]
    assert outputs[0] == "A CAT" and outputs[1].startswith("<p>done</p><div class='performance'>")
    assert not state.interrupted  # flags are reset after every UI call

    def broken(id_task):
        raise ValueError("nope")

    outputs = call_queue.wrap_gradio_gpu_call(broken, extra_outputs=[None])("task(x)")
    assert outputs[0] is None and outputs[1].startswith("<div class='error'>ValueError: nope</div>")
    assert isinstance(webui.errors[-1][1], ValueError) and importlib.import_module("modules.errors").exception_records[-1]["exception"] == "nope"


def test_extension_preload_scripts_settings_and_basedir(webui, tmp_path):
    ext = tmp_path / "extensions" / "sd-webui-demo"
    (ext / "scripts").mkdir(parents=True)
    (ext / "preload.py").write_text(textwrap.dedent("""
        def preload(parser):
            parser.add_argument("--demo-dir", type=str, default="models/Demo")
    """))
    (ext / "scripts" / "demo.py").write_text(textwrap.dedent("""
        from modules import scripts, script_callbacks, shared
        LOADED_FROM = scripts.basedir()

        def on_ui_settings():
            shared.opts.add_option("demo_frames", shared.OptionInfo(16, "Frames", section=("demo", "Demo")))

        script_callbacks.on_ui_settings(on_ui_settings)

        class Demo(scripts.Script):
            def title(self):
                return "Demo"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def ui(self, is_img2img):
                from modules.ui_components import InputAccordion
                return [InputAccordion(False, label="Demo")]
    """))
    runner = webui.load_extension(ext, "--demo-dir /tmp/demo")
    assert webui.shared.cmd_opts.demo_dir == "/tmp/demo"
    assert webui.shared.opts.demo_frames == 16 and webui.shared.opts.data["demo_frames"] == 16
    assert [s.title() for s in runner.alwayson_scripts] == ["Demo"]
    assert runner.default_script_args() == [0, False]
    module = webui.script_loading.loaded_scripts[str(ext / "scripts" / "demo.py")]
    assert module.LOADED_FROM == str(ext) and webui.scripts.basedir() != str(ext)
    assert webui.sd_model.network_layer_mapping  # the Lora callbacks survived load_scripts' clear
    assert webui.errors == []


def test_sdp_optimization_replaces_the_class_forward_and_keeps_the_context_contract(webui):
    import ldm.modules.attention as attention

    assert attention.CrossAttention.forward is webui.sd_hijack_optimizations.scaled_dot_product_attention_forward
    attn1 = webui.unet.input_blocks[1][1].transformer_blocks[0].attn1
    x = torch.randn(2, 16, attn1.to_q.in_features)
    with torch.no_grad():
        sdp = attn1(x)
        torch.testing.assert_close(sdp, webui.sd_hijack_optimizations._original_forward["ldm"](attn1, x), atol=1e-5, rtol=1e-5)
        handle = attn1.register_forward_pre_hook(lambda m, args, kwargs: (args, {**kwargs, "context": args[0][:1].expand_as(args[0])}),
                                                 with_kwargs=True)
        cross_frame = attn1(x)
        handle.remove()
    torch.testing.assert_close(cross_frame[0], sdp[0])
    assert not torch.allclose(cross_frame[1], sdp[1])


def test_the_session_cleans_up_after_itself(tmp_path):
    import ldm.modules.attention as attention

    linear_forward, attention_forward = torch.nn.Linear.forward, attention.CrossAttention.forward
    for run in range(2):
        with webui_stub(tmp_path / str(run)) as session:
            assert sys.modules["modules"].__file__.startswith(STUB_DIR)
            assert torch.nn.Linear.forward is not linear_forward
            session.run(session.txt2img(steps=1))
        assert not any(name == "modules" or name.startswith("modules.") for name in sys.modules)
        assert not any((getattr(module, "__file__", None) or "").startswith(STUB_DIR + os.sep) for module in sys.modules.values())
        assert torch.nn.Linear.forward is linear_forward and attention.CrossAttention.forward is attention_forward


def test_images_do_not_depend_on_the_attention_implementation(tmp_path):
    images = []
    for option in ("None", "sdp"):
        with webui_stub(tmp_path / option, attention=option) as session:
            import ldm.modules.attention as attention

            assert (attention.CrossAttention.forward is session.sd_hijack_optimizations.scaled_dot_product_attention_forward) == (option == "sdp")
            images.append(session.run(session.txt2img(steps=2)).images[0])
    difference = np.abs(np.asarray(images[0], dtype=int) - np.asarray(images[1], dtype=int))
    assert difference.max() <= 1  # float rounding only
