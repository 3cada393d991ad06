"""Mirrors A1111 ``modules/shared_cmd_options.py`` + ``cmd_args.py``: the argparse parser and ``cmd_opts``.

As in A1111, every extension's ``preload.py`` gets ``preload(parser)`` *before* the command line is
parsed (``script_loading.preload_extensions`` over ``paths.extensions_dir``), so extension flags land
on ``cmd_opts``. The command line is ``$COMMANDLINE_ARGS`` only (A1111 appends it to ``sys.argv``; the
stand-in never reads ``sys.argv``, which belongs to pytest). Only a handful of A1111's flags exist.
``reparse(args)`` re-parses into the *same* Namespace object (for tests that preload later).
"""
import argparse
import os
import shlex

from modules import paths, script_loading

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", type=str, default=paths.data_path)
parser.add_argument("--models-dir", type=str, default=None)
parser.add_argument("--ckpt-dir", type=str, default=None)
parser.add_argument("--embeddings-dir", type=str, default=os.path.join(paths.data_path, "embeddings"))
parser.add_argument("--lora-dir", type=str, default=os.path.join(paths.models_path, "Lora"))  # Lora's preload.py
for switch in ("--no-half", "--no-half-vae", "--medvram", "--medvram-sdxl", "--lowvram", "--api", "--nowebui", "--freeze-settings",
               "--disable-console-progressbars", "--no-prompt-history", "--disable-safe-unpickle"):
    parser.add_argument(switch, action="store_true", default=False)

script_loading.preload_extensions(paths.extensions_dir, parser)
script_loading.preload_extensions(paths.extensions_builtin_dir, parser)

cmd_opts = parser.parse_args(shlex.split(os.environ.get("COMMANDLINE_ARGS", "")))


def reparse(args: str | list[str] = ""):
    """Parse ``args`` again (after a late ``preload``) into the existing ``cmd_opts`` object."""
    argv = shlex.split(args) if isinstance(args, str) else list(args)
    vars(cmd_opts).update(vars(parser.parse_args(argv)))
    return cmd_opts
