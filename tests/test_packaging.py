"""The distribution installs inside one namespace, so it lives beside PyPI's `schemas`, `pipelines`, `workers`.

The wheel is built from this checkout and installed (without dependencies) into a fresh virtual environment
whose only other view is this environment's site-packages as a plain path (so the editable install's finder
is not loaded). A package that owns a top-level ``schemas`` sits beside it; every module of the product must
import, the console script must run, and the foreign ``schemas`` must stay the foreign one.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[1]
BUILD_LITTER = (".venv", ".git", "build", "dist", ".embedstream", "*.egg-info", "__pycache__", ".*_cache")
IMPORT_ALL = """
import importlib, pkgutil, sys
import schemas, embedstream
assert schemas.OWNER == "someone else", schemas.__file__
names = []
for top in ("schemas", "onnx_models", "pipelines", "workers"):
    package = importlib.import_module(f"embedstream.{top}")
    assert "site-packages" in package.__file__, package.__file__
    names.append(package.__name__)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"embedstream.{top}."):
        importlib.import_module(info.name)
        names.append(info.name)
print(len(names))
"""


def test_wheel_installs_in_one_namespace_beside_a_foreign_schemas_package(tmp_path: Path) -> None:
    # Built from a copy: setuptools reuses an in-tree build/ folder, which can hold modules of another state.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LITTER))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("embedstream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names}
    for data in ("onnx_models/catalog/data/imagenet_classes.tsv", "onnx_models/data/corpus.jsonl"):
        assert f"embedstream/{data}" in names  # package data travels with the namespaced packages
    assert tops == {"embedstream", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # This environment's dependencies as a plain path: its .pth files (the editable finder) are not processed.
    ours = sysconfig.get_paths()["purelib"]
    assert ours in site.getsitepackages() or ours in sys.path
    (purelib / "zz_dependencies.pth").write_text(ours + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(purelib), str(wheel)],
        check=True,
        timeout=300,
    )
    foreign = purelib / "schemas"
    foreign.mkdir()
    (foreign / "__init__.py").write_text('OWNER = "someone else"\n')

    run = subprocess.run(
        [str(python), "-c", IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.strip().splitlines()[-1]) > 60  # every module of the four packages imported

    cli = subprocess.run(
        [str(python), "-m", "embedstream.workers.cli", "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "ingest" in cli.stdout


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """pyproject lists packages by their namespaced names; a new folder must be listed or it is not shipped."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "embedstream." + str(init.parent.relative_to(ROOT)).replace("/", ".")
        for top in ("schemas", "onnx_models", "pipelines", "workers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed
