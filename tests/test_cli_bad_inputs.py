"""Every refused input of ``generate``/``demo``, one CLI process each: exit status 2, the whole of
stderr is one ``videoelevator: error: …`` line naming the field or file, and no file — output or
input — is created or changed. Every case fails before a model is loaded, so the processes are
short; they run a few at a time."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import motion_files

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
WORKERS = 3


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib_elevator", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=300)


def snapshot(*folders: Path) -> dict:
    """Every file and folder under ``folders`` with its content hash and modification time."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
            state[str(path)] = (digest, path.stat().st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def bad_files(model_files, tmp_path_factory):
    """Broken variants of the model files, each wrong in one way a user has met."""
    checkpoint, motion, lora = model_files
    root = tmp_path_factory.mktemp("bad-models")
    pickled = root / "pickled-text-encoder"
    shutil.copytree(checkpoint, pickled)
    state = load_file(pickled / "text_encoder" / "model.safetensors")
    (pickled / "text_encoder" / "model.safetensors").unlink()
    torch.save(state, pickled / "text_encoder" / "pytorch_model.bin")
    configs = root / "configs"
    shutil.copytree(checkpoint, configs)
    (configs / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    misplaced = root / "misplaced-text-encoder.safetensors"
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4, 3, 3),
               "text_encoder.text_model.embeddings.token_embedding.weight": torch.zeros(8, 4)}, misplaced)
    pickled_single = root / "model.ckpt"
    torch.save({"state_dict": {}}, pickled_single)
    wide_motion = root / "wide_mm.safetensors"  # channels 64/128/256/256 for a 32/64/128/128 UNet
    motion_files.write_kind("animatelcm_t2v", wide_motion, scale=5)
    damaged = root / "damaged.safetensors"
    damaged.write_bytes(motion.read_bytes()[:1000])
    return dict(pickled=pickled, configs=configs, misplaced=misplaced, pickled_single=pickled_single,
                wide_motion=wide_motion, damaged=damaged)


def generate_args(model_files, *extra, **replace):
    checkpoint, motion, lora = model_files
    flags = {"--checkpoint": str(checkpoint), "--motion-module": str(motion), "--t2v-lora": str(lora),
             "--prompt": "a boat", "--width": "64", "--height": "64", "--steps": "8", "--frames": "3",
             "--refine-at": "6,3", "--t2v-steps": "2", "--out": "out/v", "--format": ["mp4", "png"]}
    for flag, value in replace.items():
        flag = "--" + flag.replace("_", "-")
        if value is None:
            flags.pop(flag)
        else:
            flags[flag] = value
    args = ["generate"]
    for flag, value in flags.items():
        args += [flag, *(value if isinstance(value, list) else [value])]
    return [*args, "--quiet", *extra]


def too_big_for_this_machine() -> bool:
    """Whether 64 frames at 2048x2048 and 1000 steps (the T2V in 16-frame windows) exceed this machine's free
    memory by the estimate, with the model_files fixture's SD1.5-shaped widths (so on nearly every machine)."""
    from lib_elevator.standalone.resources import ModelShape, RunSize, available_bytes, estimate_peak_bytes

    shape = ModelShape((32, 64, 128, 128), 2, (16, 16, 16, 16))
    return estimate_peak_bytes(shape, RunSize(64, 2048, 2048, 1000, 16), 4, 0) > available_bytes(torch.device("cpu"))


# (name, arguments as a function of the model files, what the one line must contain)
CASES = [
    ("cfg nan", lambda m, b: generate_args(m, cfg_scale="nan"), "cfg_scale='nan' is not allowed; expected a number"),
    ("cfg inf", lambda m, b: generate_args(m, cfg_scale="inf"), "cfg_scale='inf' is not allowed; expected a number"),
    ("cfg negative", lambda m, b: generate_args(m, cfg_scale="-5"), "cfg_scale=-5.0 is not allowed; a value in [1, 30]"),
    ("cfg text", lambda m, b: generate_args(m, cfg_scale="high"), "cfg_scale='high' is not allowed; expected a number"),
    ("steps negative", lambda m, b: generate_args(m, steps="-5"), "steps=-5 is not allowed"),
    ("steps fraction", lambda m, b: generate_args(m, steps="10.5"), "steps='10.5' is not allowed; expected a whole number"),
    ("steps zero", lambda m, b: generate_args(m, steps="0"), "steps=0 is not allowed"),
    ("seed 2^70", lambda m, b: generate_args(m, seed=str(2**70)), f"seed={2**70} is not allowed"),
    ("seed negative", lambda m, b: generate_args(m, seed="-1"), "seed=-1 is not allowed"),
    ("seed text", lambda m, b: generate_args(m, seed="abc"), "seed='abc' is not allowed"),
    ("width not /8", lambda m, b: generate_args(m, width="60"), "width=60 is not allowed; a multiple of 8"),
    ("height too big", lambda m, b: generate_args(m, height="4096"), "height=4096 is not allowed"),
    ("one frame", lambda m, b: generate_args(m, frames="1"), "frames=1 is not allowed"),
    ("frames over schema", lambda m, b: generate_args(m, frames="1025"), "frames=1025 is not allowed"),
    ("frames over motion module", lambda m, b: generate_args(m, "--no-context", frames="65"),
     "frames=65 is not allowed; at most 64 with context windows off"),
    ("refine order", lambda m, b: generate_args(m, refine_at="6,7"), "refine_at=(6, 7) is not allowed"),
    ("refine mixed", lambda m, b: generate_args(m, refine_at="0.5,3"), "refine_at=(0.5, 3) is not allowed"),
    ("t2v steps", lambda m, b: generate_args(m, t2v_steps="5"), "t2v_steps=5 is not allowed"),
    ("t2v cfg", lambda m, b: generate_args(m, t2v_cfg_scale="100"), "t2v_cfg_scale=100.0 is not allowed"),
    ("d_t zero", lambda m, b: generate_args(m, d_t="0"), "d_t=0.0 is not allowed"),
    ("fps zero", lambda m, b: generate_args(m, fps="0"), "fps=0.0 is not allowed"),
    ("filter", lambda m, b: generate_args(m, filter="sinc"), "argument --filter: invalid choice: 'sinc'"),
    ("device tpu9", lambda m, b: generate_args(m, device="tpu9"), "device='tpu9' is not allowed"),
    ("device cuda:99", lambda m, b: generate_args(m, device="cuda:99"), "device='cuda:99' is not allowed"),
    ("dtype", lambda m, b: generate_args(m, dtype="float8"), "argument --dtype: invalid choice: 'float8'"),
    ("out under a file", lambda m, b: generate_args(m, out="inputs/notes.txt/v"), "is a file, not a folder"),
    ("out empty", lambda m, b: generate_args(m, out=""), "out='' is not allowed"),
    ("crf negative", lambda m, b: generate_args(m, crf="-5"), "crf=-5 is not allowed; 0..51 for MP4"),
    ("crf too high", lambda m, b: generate_args(m, crf="99"), "crf=99 is not allowed; 0..51 for MP4"),
    ("loop negative", lambda m, b: generate_args(m, loop="-1"), "loop=-1 is not allowed"),
    ("format", lambda m, b: generate_args(m, format=["mp4", "avi"]), "argument --format: invalid choice: 'avi'"),
    ("frames folder exists", lambda m, b: generate_args(m, out="out/existing"),
     "existing-frames already exists; refusing to overwrite a folder of frames"),
    ("no prompt", lambda m, b: generate_args(m, prompt=None), "one of the arguments --prompt --prompt-file is required"),
    ("unknown flag", lambda m, b: generate_args(m, "--bogus"), "unrecognized arguments: --bogus"),
    ("solver", lambda m, b: generate_args(m, solver="euler"), "argument --solver: invalid choice: 'euler'"),
    ("missing checkpoint", lambda m, b: generate_args(m, checkpoint="nope"), "checkpoint 'nope' does not exist"),
    ("missing motion module", lambda m, b: generate_args(m, motion_module="nope.safetensors"),
     "motion module 'nope.safetensors' does not exist"),
    ("no T2V", lambda m, b: generate_args(m, motion_module=None), "give exactly one T2V"),
    ("two T2Vs", lambda m, b: generate_args(m, t2v_unet3d=str(m[0])), "give exactly one T2V"),
    ("LoRA as motion module", lambda m, b: generate_args(m, motion_module=str(m[2])),
     "Cannot use 'AnimateLCM_sd15_t2v_lora.safetensors' as a motion module"),
    ("motion module of other widths", lambda m, b: generate_args(m, motion_module=str(b["wide_motion"])),
     "Cannot use 'wide_mm.safetensors' as a motion module. The AnimateLCM motion module is made for"),
    ("damaged motion module", lambda m, b: generate_args(m, motion_module=str(b["damaged"])),
     "motion module 'damaged.safetensors' is not a readable .safetensors file"),
    ("missing T2V LoRA", lambda m, b: generate_args(m, t2v_lora="nope.safetensors"), "T2V LoRA 'nope.safetensors' does not exist"),
    ("pickled text encoder", lambda m, b: generate_args(m, checkpoint=str(b["pickled"])),
     "holds only pickled weights (pytorch_model.bin)"),
    ("misplaced text-encoder keys", lambda m, b: generate_args(m, checkpoint=str(b["misplaced"]),
                                                               config_dir=str(b["configs"])),
     "checkpoint 'misplaced-text-encoder.safetensors' has no text-encoder weights"),
    ("pickled single file", lambda m, b: generate_args(m, checkpoint=str(b["pickled_single"]),
                                                       config_dir=str(b["configs"])),
     "checkpoint 'model.ckpt': only .safetensors single files are loaded"),
    ("single file without configs", lambda m, b: generate_args(m, checkpoint=str(b["misplaced"])),
     "a single-file checkpoint needs --config-dir"),
    ("demo steps", lambda m, b: ["demo", "--steps", "-5", "--out", "out/demo"], "steps=-5 is not allowed"),
    ("demo size", lambda m, b: ["demo", "--size", "60", "--out", "out/demo"], "width=60 is not allowed"),
    ("demo explicit t2v steps", lambda m, b: ["demo", "--steps", "4", "--t2v-steps", "6", "--out", "out/demo"],
     "t2v_steps=6 is not allowed"),
    ("demo crf", lambda m, b: ["demo", "--crf", "70", "--format", "webm", "--out", "out/demo"],
     "crf=70 is not allowed; 0..63 for WEBM"),
]
if too_big_for_this_machine():
    CASES.append(("too big for memory", lambda m, b: generate_args(m, width="2048", height="2048", frames="64",
                                                                  steps="1000", refine_at=None, t2v_steps=None),
                  "not enough memory: 64 frames at 2048x2048 need an estimated"))
if not torch.cuda.is_available():
    CASES.append(("device cuda without CUDA", lambda m, b: generate_args(m, device="cuda"),
                  "device='cuda' is not allowed; this machine has no usable CUDA device"))


@pytest.fixture
def workspace(tmp_path):
    """A folder with an earlier run's outputs and an input file, which no refused run may touch."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "v.mp4").write_bytes(b"an earlier video")
    (tmp_path / "out" / "existing.mp4").write_bytes(b"an earlier video")
    (tmp_path / "out" / "existing-frames").mkdir()
    (tmp_path / "out" / "existing-frames" / "mine.png").write_bytes(b"a frame")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "notes.txt").write_text("not a folder")
    return tmp_path


def test_every_bad_input_is_one_line_exit_2_and_changes_nothing(model_files, bad_files, workspace):
    assert len(CASES) >= 30
    watched = (workspace, model_files[0].parent, bad_files["configs"].parent)
    before = snapshot(*watched)
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda case: cli(*case[1](model_files, bad_files), cwd=workspace), CASES))
    failures = []
    for (name, _, expected), result in zip(CASES, results):
        lines = result.stderr.splitlines()
        ok = (result.returncode == 2 and len(lines) == 1 and lines[0].startswith("videoelevator: error: ")
              and expected in lines[0] and "VideoElevator:" not in lines[0] and result.stdout == "")
        if not ok:
            failures.append(f"{name}: exit {result.returncode}, stderr {result.stderr!r}")
    assert not failures, "\n".join(failures)
    assert snapshot(*watched) == before


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_partial_output(tmp_path):
    """SIGINT during sampling: the same single line every time, and nothing in the output folder."""
    process = subprocess.Popen([sys.executable, "-m", "lib_elevator", "demo", "--frames", "8", "--steps", "30",
                                "--out", "out/demo", "--format", "mp4", "png", "--quiet"], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "tiny models built" in process.stdout.readline()  # sampling starts now
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr == "videoelevator: interrupted; no partial output was left\n"
    assert not (tmp_path / "out").exists()
