"""Motion files load inside both WebUIs as they load standalone: ``.ckpt``/``.pt``/``.pth`` written by old and
current torch, with or without a ``state_dict`` wrapper, are read with torch's restricted unpickler directly,
never through the host's ``torch.load`` replacement (the stand-in's ``modules.safe`` does what A1111's does:
it refuses current torch's archives and answers ``None``); malicious files are refused naming the global."""
import zipfile
from pathlib import Path

import pytest
import torch

import motion_files
from test_a1111 import MOTION, elevator_p, extension_session, motion_file, videos_in  # noqa: F401
from test_motion_loading import RunsCode

# Archive entries torch 1.6–2.0 did not write; without them a file is what an older torch saved.
NEWER_ARCHIVE_ENTRIES = (".format_version", ".storage_alignment", "byteorder", ".data/serialization_id")


def as_older_torch_archive(path: Path) -> Path:
    """Rewrite a current-torch zip checkpoint with only the entries older torch wrote."""
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()
                   if info.filename.split("/", 1)[1] not in NEWER_ARCHIVE_ENTRIES]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def save_checkpoint(tensors, path: Path, writer: str, wrapped: bool) -> Path:
    checkpoint = {"state_dict": dict(tensors), "epoch": 3, "global_step": 1200} if wrapped else tensors
    torch.save(checkpoint, path, _use_new_zipfile_serialization=writer != "legacy")
    return as_older_torch_archive(path) if writer == "torch<2.1" else path


WRITERS = ("current", "torch<2.1", "legacy")
VARIANTS = [(writer, wrapped, ".ckpt") for writer in WRITERS for wrapped in (False, True)] + [
    ("current", False, ".pt"), ("current", True, ".pth")]


@pytest.fixture(scope="module")
def motion_tensors():
    return motion_files.make_tensors(motion_files.layout("animatelcm_t2v", motion_files.TINY_SCALE), 0)


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_every_checkpoint_variant_loads_inside_the_webui(tmp_path, motion_file, motion_tensors, host):
    from_disk = tmp_path / "files"
    from_disk.mkdir()
    with extension_session(tmp_path / "webui", motion_file, host) as webui:
        from lib_elevator.motion import load_motion_adapter, load_weights_file

        assert (torch.load is not torch.serialization.load) == (host == "a1111")  # A1111 replaced it
        for writer, wrapped, suffix in VARIANTS:
            path = save_checkpoint(motion_tensors, from_disk / f"{writer}-{wrapped}{suffix}".replace("<", "lt"),
                                   writer, wrapped)
            loaded = load_weights_file(path)
            assert loaded.keys() == motion_tensors.keys(), (writer, wrapped, suffix)
            assert all(torch.equal(loaded[name], tensor) for name, tensor in motion_tensors.items())
            assert load_motion_adapter(path)[1].kind.name == "ANIMATELCM_T2V"
        assert webui.errors == []  # the host's wrapper was never asked


def test_a_current_torch_ckpt_makes_a_video_in_a1111(tmp_path, motion_file, motion_tensors):
    with extension_session(tmp_path, motion_file) as webui:
        folder = Path(webui.paths.models_path) / "VideoElevator"
        save_checkpoint(motion_tensors, folder / "AnimateLCM_tiny.ckpt", "current", wrapped=True)
        webui.run(elevator_p(webui, motion_model="AnimateLCM_tiny.ckpt"))
        assert webui.errors == []
        assert any(path.suffix == ".mp4" for path in videos_in(webui))


@pytest.mark.parametrize("writer", ["current", "legacy"])
@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_a_malicious_ckpt_is_refused_naming_the_global(tmp_path, motion_file, host, writer):
    marker = tmp_path / "ran"
    with extension_session(tmp_path / "webui", motion_file, host) as webui:
        folder = Path(webui.paths.models_path) / "VideoElevator"
        torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, folder / "evil.ckpt",
                   _use_new_zipfile_serialization=writer != "legacy")
        with pytest.raises(ValueError, match=r"Refused to load 'evil\.ckpt'.*\('(builtins\.)?exec'\)") as refusal:
            webui.run(elevator_p(webui, motion_model="evil.ckpt"))
        assert refusal.value.status_code == 422
        assert not marker.exists() and videos_in(webui) == []
