"""Mirrors A1111 ``modules/shared.py`` (+ what ``shared_init.initialize`` assigns): the global objects.

``opts``, ``cmd_opts``, ``state``, ``total_tqdm``, ``device`` exist from import on; ``sd_model`` is
set by whoever "loads" the model (the test fixture). Styles are not supported: ``prompt_styles``
returns prompts unchanged.
"""
from modules import devices, options, shared_cmd_options, shared_options, shared_state, shared_total_tqdm
from modules.paths import data_path, models_path, script_path, extensions_dir, extensions_builtin_dir  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

batch_cond_uncond = True  # old field, unused (shared.opts.batch_cond_uncond is the real one)
parallel_processing_allowed = True
demo = None
device = devices.device
xformers_available = False
hypernetworks = {}
loaded_hypernetworks = []
face_restorers = []
sd_upscalers = []
tab_names = []
hide_dirs = {"visible": True}

OptionInfo = options.OptionInfo
options_section = options.options_section
options_templates = shared_options.options_templates
restricted_opts = shared_options.restricted_opts
opts = options.Options(options_templates, restricted_opts)

state = shared_state.State()
total_tqdm = shared_total_tqdm.TotalTQDM()

sd_model = None
"""the loaded model (an ``modules.stub_model.StubLatentDiffusion`` in the stand-in); set by the fixture"""

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
}


class _NoStyles:
    """Stand-in for ``styles.StyleDatabase``: no styles are defined, prompts pass unchanged."""

    styles = {}

    def apply_styles_to_prompt(self, prompt, styles):
        return prompt

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return prompt

    def extract_styles_from_prompt(self, prompt, negative_prompt):
        return [], prompt, negative_prompt


prompt_styles = _NoStyles()
