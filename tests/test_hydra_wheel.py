"""Discovery from a built wheel installed into a fresh venv (not the editable install).

A missing plugin is silent in Hydra (``+recorder=core`` would fail as an unknown group, or a
config dir would be missing), so this builds the wheel from a copy of the source tree, checks
what it holds, installs it with ``--no-deps`` into a new venv and composes configs there. The
venv gets hydra-core and its dependencies copied from this environment's installed
distributions: no network, and no torch (composition and the plugin do not need it).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HYDRA_DISTS = (
    "hydra-core",
    "hydra-zen",
    "typing_extensions",
    "omegaconf",
    "antlr4-python3-runtime",
    "PyYAML",
    "packaging",
)
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "outputs",
    "multirun",
    "tests",
    "benchmarks",
)
APP = """
import hydra
from omegaconf import OmegaConf


@hydra.main(config_path=None, version_base="1.3")
def main(cfg):
    print("TASK", OmegaConf.to_container(cfg))


if __name__ == "__main__":
    main()
"""


def run(*command: str | Path, cwd: Path) -> str:
    proc = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def copy_distribution(name: str, site_packages: Path) -> None:
    """Install an already installed distribution into another venv by copying its files."""
    dist = importlib.metadata.distribution(name)
    source_root = Path(sysconfig.get_paths()["purelib"]).resolve()
    for file in dist.files or []:
        source = Path(dist.locate_file(file)).resolve()
        if source_root not in source.parents or not source.is_file():
            continue  # console scripts and the like live outside site-packages
        target = site_packages / source.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    dist = tmp / "dist"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        dist,
        source,
        cwd=tmp,
    )
    (found,) = dist.glob("arena_recording-*.whl")
    return found


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "arena_recording/conf/__init__.py",
        "arena_recording/conf/recorder/core.yaml",
        "arena_recording/conf/recorder/variations.yaml",
        "arena_recording/conf/recorder/default.yaml",
        "arena_recording/core/config.py",
        "arena_recording/integrations/hydra_callback.py",
        "arena_recording/core/session.py",
        "arena_recording/analysis/load.py",
        "hydra_plugins/arena_recording/__init__.py",
        "hydra_plugins/arena_recording/searchpath.py",
        "hydra_plugins/arena_recording/hydra/env/default.yaml",
    ):
        assert name in names, name
    assert "hydra_plugins/__init__.py" not in names  # a namespace package shared by plugins
    for init in [*ROOT.glob("arena_recording/**/__init__.py"), *ROOT.glob("conf/**/__init__.py")]:
        relative = init.relative_to(ROOT).as_posix().replace("conf/", "arena_recording/conf/", 1)
        assert relative in names, f"package {relative} is missing from the wheel"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "arena-recording = arena_recording.cli:main" in text


def test_discovery_from_the_wheel_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        wheel,
        cwd=tmp_path,
    )
    site_packages = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
        .strip()
        .splitlines()[-1]
    )
    for name in HYDRA_DISTS:
        copy_distribution(name, site_packages)

    where = run(python, "-c", "import arena_recording.conf as c; print(c.__file__)", cwd=tmp_path)
    assert where.strip().startswith(str(site_packages))
    app = tmp_path / "app.py"
    app.write_text(APP)

    searchpath = run(python, app, "--info", "searchpath", cwd=tmp_path)
    assert "pkg://arena_recording.conf" in searchpath
    assert "pkg://hydra_plugins.arena_recording" in searchpath

    job = run(python, app, "+recorder=default", "--cfg", "job", cwd=tmp_path)
    assert "func: arena_recording.core.terms:core" in job
    assert "func: arena_recording.core.terms:variations" in job

    # the schemas are typed while Hydra composes, without torch
    typo = [python, app, "+recorder=default", "recorder.terms.core.enabld=false", "--cfg", "job"]
    env = {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run(typo, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "recorder.terms.core.enabld" in proc.stderr, proc.stderr

    hydra = run(python, app, "+recorder=core", "--cfg", "hydra", cwd=tmp_path)
    assert "_target_: arena_recording.integrations.hydra_callback.RecorderCallback" in hydra

    # the environment-wide callback does nothing (and imports no torch) without a recorder
    plain = run(python, app, f"hydra.run.dir={tmp_path / 'run'}", "+x=1", cwd=tmp_path)
    assert "TASK {'x': 1}" in plain

    usage = run(venv / "bin" / "arena-recording", "merge", "--help", cwd=tmp_path)
    assert "sweep_dir" in usage
