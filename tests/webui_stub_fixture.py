"""The ``webui`` pytest fixture: a fresh AUTOMATIC1111-1.10.1-shaped ``modules`` package and a tiny model.

Use it from a test module with ``from webui_stub_fixture import webui  # noqa: F401`` (this module is
not a conftest, so it only affects the tests that import it). Each test gets:

- ``tests/webui_stub`` at the front of ``sys.path`` → ``import modules.shared`` etc. give the stand-in
  (see ``tests/webui_stub/modules/__init__.py`` for what is faithful);
- ``$WEBUI_STUB_DATA_DIR`` = the test's ``tmp_path`` (``paths.data_path``; outputs go under it);
- the Lora stand-in installed (``torch.nn.Linear/Conv2d.forward`` patched), the tiny checkpoint built
  and "loaded" (``shared.sd_model``, ``on_model_loaded`` callbacks run), the "sdp" attention
  optimization applied to ldm's ``CrossAttention`` (as A1111 does at model load);

and afterwards every ``modules*``/``k_diffusion*`` module is removed from ``sys.modules``, the torch and
ldm class patches (and ``modules.safe``'s ``torch.load`` replacement) are undone, ``sys.path`` and the environment are restored.

The fixture yields a ``WebUI`` helper (below): attribute access imports stand-in modules
(``webui.shared``, ``webui.processing`` …), ``webui.sd_model``/``webui.unet``, ``webui.txt2img(...)``
builds a ``p`` like A1111's txt2img tab does, ``webui.run(p)`` runs it the way the UI does,
``webui.post_txt2img(payload)`` sends it through the API stand-in (→ status code, JSON body),
``webui.runner(*scripts)`` builds a ``ScriptRunner``, ``webui.load_extension(path)`` loads a real
extension folder (``preload.py`` + ``scripts/*.py``), ``webui.errors`` lists reported exceptions.

``webui_stub(tmp_path, host="forge")`` gives a stable-diffusion-webui-forge 2.x-shaped session instead
(``$WEBUI_STUB_HOST``; see ``tests/webui_stub/backend/__init__.py``): ``shared.sd_model`` is a Forge
``StableDiffusion`` engine with ``forge_objects`` (same tiny weights, so results match the A1111 host),
``backend`` is importable, processing/sampling follow Forge, ldm's ``UNetModel.forward`` is replaced by
Forge's traversal (undone afterwards), no attention optimization is applied (Forge's ``sd_hijack`` does nothing) and the Lora stand-in works the Forge way. ``webui.unet`` is the shared ldm UNet
(``forge_objects_original.unet.model.diffusion_model``).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path

import pytest

from fake_gpu import fake_gpu

STUB_DIR = str(Path(__file__).resolve().parent / "webui_stub")
WEBUI_ROOT = Path(STUB_DIR) / "webui_root"  # the WebUI's own scripts/ (the X/Y/Z plot stand-in)


def _is_stub_module(name, module):
    """Every ``modules*`` entry (the session refuses to start when one exists), and ``k_diffusion*``,
    ``gradio*`` and ``backend*`` from here."""
    if name in ("modules", "modules_forge") or name.startswith(("modules.", "modules_forge.")):
        return True
    packages = ("k_diffusion", "gradio", "backend", "fastapi")
    in_package = name in packages or name.startswith(tuple(f"{package}." for package in packages))
    return in_package and (getattr(module, "__file__", None) or "").startswith(STUB_DIR + os.sep)


def _purge_stub_modules():
    for name in [n for n, m in sys.modules.items() if _is_stub_module(n, m)]:
        del sys.modules[name]


class WebUI:
    """Handle on one stand-in WebUI session (one test)."""

    def __init__(self, data_dir: Path, sd_model, host: str = "a1111"):
        self.data_dir = Path(data_dir)
        self.sd_model = sd_model
        self.host = host

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"modules.{name}")
        except ModuleNotFoundError as e:
            raise AttributeError(name) from e

    @property
    def unet(self):
        if self.host == "forge":
            return self.sd_model.forge_objects_original.unet.model.diffusion_model
        return self.sd_model.model.diffusion_model

    @property
    def errors(self) -> list:
        """(message, exception) for every exception the WebUI reported instead of raising."""
        return importlib.import_module("modules.errors").reported

    def txt2img(self, prompt="a cat", *, scripts=None, script_args=None, **kwargs):
        """A ``StableDiffusionProcessingTxt2Img`` as the txt2img tab builds it (small defaults: 64×64, 4 steps)."""
        processing = importlib.import_module("modules.processing")
        opts = importlib.import_module("modules.shared").opts
        fields = dict(negative_prompt="", steps=4, sampler_name="Euler", scheduler="Automatic", width=64, height=64,
                      cfg_scale=7.0, seed=1, batch_size=1, n_iter=1,
                      outpath_samples=opts.outdir_samples or opts.outdir_txt2img_samples,
                      outpath_grids=opts.outdir_grids or opts.outdir_txt2img_grids)
        fields.update(kwargs)
        p = processing.StableDiffusionProcessingTxt2Img(sd_model=self.sd_model, prompt=prompt, **fields)
        if scripts is not None:
            p.scripts = scripts
            p.script_args = list(script_args) if script_args is not None else scripts.default_script_args()
        return p

    def run(self, p):
        """What the txt2img button does: ``state.begin``, the selected script's ``run`` or ``process_images``,
        ``p.close()``, ``state.end``. (The UI wrapper's reset of the interrupt/skip flags is left out so
        tests can look at them; ``call_queue.wrap_gradio_gpu_call`` does it.)"""
        shared = importlib.import_module("modules.shared")
        processing = importlib.import_module("modules.processing")
        shared.state.begin(job="txt2img")
        try:
            with contextlib.closing(p):
                processed = p.scripts.run(p, *p.script_args) if p.scripts is not None else None
                if processed is None:
                    processed = processing.process_images(p)
            shared.total_tqdm.clear()
            return processed
        finally:
            shared.state.end()

    def post_txt2img(self, payload: dict) -> tuple:
        """(status code, JSON body) of ``POST /sdapi/v1/txt2img`` with ``payload`` (the API stand-in)."""
        api = importlib.import_module("modules.api.api")
        return api.Api().post(api.TXT2IMG_PATH, payload)

    def runner(self, *scripts_or_classes, is_img2img=False):
        """A ``ScriptRunner`` holding these scripts, UI created (``args_from/args_to`` assigned)."""
        scripts = importlib.import_module("modules.scripts")
        runner = scripts.ScriptRunner()
        runner.initialize_scripts(is_img2img, script_classes=list(scripts_or_classes))
        runner.setup_ui()
        return runner

    def preload(self, extension_dir, args: str | list[str] = ""):
        """Run an extension's ``preload.py`` on the parser, then re-parse the command line ``args``."""
        script_loading = importlib.import_module("modules.script_loading")
        shared_cmd_options = importlib.import_module("modules.shared_cmd_options")
        extension_dir = Path(extension_dir)
        script_loading.preload_extensions(str(extension_dir.parent), shared_cmd_options.parser,
                                          extension_list=[extension_dir.name])
        return shared_cmd_options.reparse(args)

    def load_extension(self, extension_dir, args: str | list[str] = "", *, ui=True, is_img2img=False,
                       webui_scripts=False):
        """Start-up for one extension folder: preload + command line, load ``scripts/*.py`` (callbacks are
        cleared first, as A1111 does), re-register the built-in Lora callbacks, run ``on_model_loaded``,
        and with ``ui`` the settings callbacks (A1111 runs ``on_ui_settings`` only when it builds the UI).
        ``webui_scripts`` loads the WebUI's own scripts first, as the WebUI does (the X/Y/Z plot stand-in).
        Returns ``scripts.scripts_txt2img`` (or img2img) with its scripts initialized and UI set up."""
        scripts = importlib.import_module("modules.scripts")
        script_callbacks = importlib.import_module("modules.script_callbacks")
        stub_lora = importlib.import_module("modules.stub_lora")
        self.preload(extension_dir, args)
        scripts.load_scripts([str(WEBUI_ROOT)] * webui_scripts + [str(Path(extension_dir))])
        stub_lora.register_callbacks()
        script_callbacks.model_loaded_callback(self.sd_model)
        if ui:
            script_callbacks.ui_settings_callback()
        runner = scripts.scripts_img2img if is_img2img else scripts.scripts_txt2img
        runner.initialize_scripts(is_img2img)
        runner.setup_ui()
        return runner


@contextlib.contextmanager
def webui_stub(data_dir, *, commandline_args: str = "", unet_config: str = "tiny", attention: str = "sdp",
               host: str = "a1111", device: str = "cpu"):
    """Context-manager form of the ``webui`` fixture (for tests that need two sessions or custom options).
    ``host``: ``"a1111"`` or ``"forge"``; ``unet_config``: ``"tiny"``, ``"sd15_shaped"`` or ``"sdxl_shaped"`` (the tiny SDXL
    checkpoint: sgm's ``DiffusionEngine`` on A1111, Forge's ``StableDiffusionXL`` engine); ``attention`` is the A1111 cross-attention optimization (unused on Forge);
    ``device="fake_gpu"`` makes ``devices.device`` the fake GPU of ``tests/fake_gpu.py`` for the session, and the
    model is sent to it the way A1111 loads it (``sd_models.send_model_to_device``: ``--medvram``/``--lowvram``
    set up ``lowvram``'s hooks)."""
    if host not in ("a1111", "forge"):
        raise ValueError(f"host must be 'a1111' or 'forge', not {host!r}")
    if "modules" in sys.modules:
        raise RuntimeError(f"a 'modules' package is already imported ({sys.modules['modules']!r}); "
                           "only one WebUI stand-in session at a time")
    if device not in ("cpu", "fake_gpu") or (device == "fake_gpu" and host != "a1111"):
        raise ValueError(f"device must be 'cpu', or 'fake_gpu' on A1111 (the fake GPU does not keep Parameter "
                         f"objects across moves, which Forge's LoRA backups rely on), not {device!r}")
    saved_env = {key: os.environ.get(key)
                 for key in ("WEBUI_STUB_DATA_DIR", "COMMANDLINE_ARGS", "WEBUI_STUB_HOST", "WEBUI_STUB_DEVICE")}
    saved_path = list(sys.path)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    os.environ["WEBUI_STUB_DATA_DIR"] = str(data_dir)
    os.environ["COMMANDLINE_ARGS"] = commandline_args
    os.environ["WEBUI_STUB_HOST"] = host
    os.environ["WEBUI_STUB_DEVICE"] = device
    sys.path.insert(0, STUB_DIR)
    stub_lora = sd_hijack = forge_unet = None
    devices_open = contextlib.ExitStack()
    try:
        if device == "fake_gpu":
            devices_open.enter_context(fake_gpu())
        from modules import script_callbacks, scripts, sd_hijack, sd_models, stub_lora, stub_model

        scripts.load_scripts([])  # start-up: no extension scripts yet; scripts_txt2img/img2img exist
        scripts.scripts_txt2img.initialize_scripts(False)
        scripts.scripts_img2img.initialize_scripts(True)
        stub_lora.setup()  # the built-in Lora extension's script
        if host == "forge":
            from backend.nn import unet as forge_unet

            forge_unet.install()  # ldm's UNetModel.forward runs the Forge traversal (transformer_options)
            model = (stub_model.build_tiny_forge_sdxl_model() if unet_config == "sdxl_shaped"
                     else stub_model.build_tiny_forge_model(unet_config))
        else:
            model = (stub_model.build_tiny_sdxl_model() if unet_config == "sdxl_shaped"
                     else stub_model.build_tiny_sd_model(unet_config))
        sd_models.model_data.set_sd_model(model)
        script_callbacks.model_loaded_callback(model)
        if host == "a1111":  # Forge's sd_hijack is a stub: no attention optimization is applied
            sd_hijack.model_hijack.apply_optimizations(attention)
        yield WebUI(Path(data_dir), model, host)
    finally:
        devices_open.close()
        if sd_hijack is not None:
            sd_hijack.model_hijack.undo_optimizations()
        if stub_lora is not None:
            stub_lora.uninstall()
        if forge_unet is not None:
            forge_unet.uninstall()
        if "modules.safe" in sys.modules:
            sys.modules["modules.safe"].uninstall()
        _purge_stub_modules()
        sys.path[:] = saved_path
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def webui(tmp_path):
    """A fresh WebUI stand-in session with the tiny model loaded; yields a ``WebUI`` helper."""
    with webui_stub(tmp_path) as session:
        yield session
