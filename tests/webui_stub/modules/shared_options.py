"""Mirrors A1111 ``modules/shared_options.py``: the settings the stand-in reads, with 1.10.1's defaults.

Only keys that some stand-in module (or a typical extension) reads are listed; an extension adds
its own through ``shared.opts.add_option`` in an ``on_ui_settings`` callback, as in A1111.
"""
import os

from modules import paths
from modules.options import OptionInfo

_out = paths.default_output_dir

options_templates = {key: OptionInfo(default) for key, default in {
    # saving images and grids
    "samples_save": True,
    "samples_format": "png",
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    "grid_save": True,
    "grid_format": "png",
    "grid_only_if_multiple": True,
    "grid_prevent_empty_spots": False,
    "n_rows": -1,
    "return_grid": True,
    "enable_pnginfo": True,
    "save_txt": False,
    "save_incomplete_images": False,
    "save_to_dirs": True,
    "grid_save_to_dirs": True,
    "outdir_samples": "",
    "outdir_txt2img_samples": os.path.join(_out, "txt2img-images"),
    "outdir_img2img_samples": os.path.join(_out, "img2img-images"),
    "outdir_grids": "",
    "outdir_txt2img_grids": os.path.join(_out, "txt2img-grids"),
    "jpeg_quality": 80,
    # stable diffusion
    "sd_model_checkpoint": None,
    "sd_unet": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "enable_quantization": False,
    "emphasis": "Original",
    "upcast_attn": False,
    "randn_source": "GPU",
    "tiling": False,
    "face_restoration": False,
    "sd_vae_decode_method": "Full",
    "sd_vae_encode_method": "Full",
    "cross_attention_optimization": "Automatic",
    "use_downcasted_alpha_bar": False,
    "sd_noise_schedule": "Default",
    # optimizations
    "s_min_uncond": 0.0,
    "s_min_uncond_all": False,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_hr": 0.0,
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "persistent_cond_cache": True,
    "batch_cond_uncond": True,
    "skip_early_cond": 0.0,
    # compatibility
    "use_old_scheduling": False,
    "use_old_karras_scheduler_sigmas": False,
    # infotext
    "add_model_name_to_info": True,
    "add_model_hash_to_info": True,
    "add_vae_name_to_info": True,
    "add_vae_hash_to_info": True,
    "add_user_name_to_info": False,
    "add_version_to_infotext": True,
    "infotext_skip_pasting": [],
    # live previews / progress
    "live_previews_enable": True,
    "show_progress_grid": True,
    "show_progress_every_n_steps": 10,
    "show_progress_type": "Approx NN",
    "live_preview_content": "Prompt",
    "multiple_tqdm": True,
    # sampler parameters
    "hide_samplers": [],
    "eta_ancestral": 1.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "sigma_min": 0.0,
    "sigma_max": 0.0,
    "rho": 0.0,
    "eta_noise_seed_delta": 0,
    "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False,
    # SDXL conditioning (sd_models_xl.get_learned_conditioning reads them)
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0,
    "no_dpmpp_sde_batch_determinism": False,
    "beta_dist_alpha": 0.6,
    "beta_dist_beta": 0.6,
    # extra networks (the built-in Lora extension's settings included)
    "extra_networks_default_multiplier": 1.0,
    "sd_lora": "None",
    "lora_functional": False,
    "lora_add_hashes_to_infotext": True,
}.items()}

restricted_opts = {"samples_filename_pattern", "outdir_samples", "outdir_txt2img_samples", "outdir_img2img_samples",
                   "outdir_grids", "outdir_txt2img_grids"}
