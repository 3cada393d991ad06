"""``pip install`` of the checkout gives an importable ``lib_elevator`` and a ``videoelevator`` command
that work from any folder. Installed offline into a fresh virtual environment that reuses this
Python's packages (torch, diffusers…) and setuptools: ``--no-build-isolation --no-deps --no-index``."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging


def checkout_copy(tmp_path: Path) -> Path:
    """The files a source distribution would hold, so the build leaves nothing in the repository."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "lib_elevator", copy / "lib_elevator", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(REPO / name, copy / name)
    return copy


def venv_with(tmp_path: Path, name: str, *install_args: str) -> Path:
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index",
                    *install_args], check=True, capture_output=True, cwd=tmp_path)
    return venv


def run_elsewhere(tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, timeout=300)


def test_pip_install_gives_the_package_and_a_working_command(tmp_path):
    venv = venv_with(tmp_path, "venv", str(checkout_copy(tmp_path)))
    where = run_elsewhere(tmp_path, str(venv / "bin" / "python"), "-c", "import lib_elevator; print(lib_elevator.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    demo = run_elsewhere(tmp_path, str(venv / "bin" / "videoelevator"), "demo", "--frames", "2", "--steps", "4",
                         "--out", "D", "--format", "gif", "--quiet")
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "elsewhere" / "D.gif").is_file() and demo.stderr == ""
    console = run_elsewhere(tmp_path, str(venv / "bin" / "videoelevator"), "generate", "--help")
    module = run_elsewhere(tmp_path, str(venv / "bin" / "python"), "-m", "lib_elevator", "generate", "--help")
    assert console.returncode == module.returncode == 0 and console.stdout == module.stdout


def test_editable_install_runs_the_checkout(tmp_path):
    copy = checkout_copy(tmp_path)
    venv = venv_with(tmp_path, "venv-editable", "-e", str(copy))
    where = run_elsewhere(tmp_path, str(venv / "bin" / "python"), "-c", "import lib_elevator; print(lib_elevator.__file__)")
    assert where.stdout.strip() == str(copy / "lib_elevator" / "__init__.py"), where.stdout + where.stderr
    version = run_elsewhere(tmp_path, str(venv / "bin" / "videoelevator"), "demo", "--help")
    assert version.returncode == 0 and "--frames" in version.stdout
