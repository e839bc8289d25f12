"""The built wheel holds only ``tunefarm/`` (issue 18): installed into a fresh virtualenv,
every module imports under ``tunefarm.`` and nothing named ``api`` or ``workers`` lands in
site-packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, tunefarm
names = [
    info.name
    for info in pkgutil.walk_packages(tunefarm.__path__, "tunefarm.")
    # __main__ runs the CLI; the migrations are Alembic scripts, run only by Alembic.
    if info.name != "tunefarm.__main__" and ".migrations" not in info.name
]
for name in names:
    importlib.import_module(name)
print(tunefarm.__file__, len(names))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools' build/ folder keeps files from earlier builds.
    source = out / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "bench", "packs"
        ),
    )
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    built = subprocess.run(
        [*command, "--no-build-isolation", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Issue 19: setuptools warned at every install that `project.license` was deprecated.
    assert "project.license" not in built.stderr, built.stderr
    (path,) = out.glob("tunefarm-*.whl")
    return path


def test_the_wheel_holds_only_the_tunefarm_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    metadata = {name for name in top_level if name.endswith(".dist-info")}
    assert len(metadata) == 1
    assert top_level - metadata == {"tunefarm"}
    for package in ("tuner", "tuning_db", "workers", "api", "cli"):
        assert any(name.startswith(f"tunefarm/{package}/") for name in names), package
    assert "tunefarm/tuning_db/migrations/env.py" in names
    assert "tunefarm/tuner/py.typed" in names


def test_installed_in_a_fresh_venv_it_imports_as_tunefarm_only(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The dependencies come from this environment's site-packages, added after the fresh
    # venv's own (a path that a .pth file adds is not scanned for further .pth files, so this
    # environment's editable install of the checkout stays out).
    fresh_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=tmp_path, capture_output=True, text=True, timeout=300)

    imported = run(str(python), "-c", IMPORT_EVERY_MODULE)
    assert imported.returncode == 0, imported.stderr[-2000:]
    location, count = imported.stdout.split()
    assert Path(location).is_relative_to(fresh_site), location
    assert int(count) > 50

    for name in ("api", "workers", "tuner", "tuning_db"):
        refused = run(str(python), "-c", f"import {name}")
        assert refused.returncode != 0, name
        assert f"No module named '{name}'" in refused.stderr

    cli = run(str(env_dir / "bin" / "tunefarm"), "--help")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "compile" in cli.stdout
