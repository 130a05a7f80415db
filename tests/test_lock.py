"""The lock is what a fresh machine installs: it must cover every range pyproject.toml declares, and the image's
lock must be the same versions. A pyproject.toml edited without `make lock` fails here, not on a user's machine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")
LOCKED_EXTRAS = ("export", "dev", "bench")  # what `make setup` installs (lock/requirements.lock)


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def hashed(path: Path) -> bool:
    """Every pinned line continues with at least one --hash (pip's --require-hashes needs it)."""
    lines = path.read_text().splitlines()
    return all(lines[i + 1].strip().startswith("--hash=sha256:") for i, line in enumerate(lines) if PIN.match(line))


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


def test_the_lock_pins_every_declared_dependency_within_its_range():
    locked = pins(ROOT / "lock" / "requirements.lock")
    for requirement in declared(LOCKED_EXTRAS):
        if requirement.marker is not None and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in lock/requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"lock/requirements.lock pins {name}=={locked[name]}, outside pyproject.toml's {requirement}: run `make lock`"
        )
    assert "resemblyzer" in locked and "webrtcvad" not in locked and "typing" not in locked


def test_the_image_lock_is_the_same_versions_and_every_lock_has_hashes():
    full = pins(ROOT / "lock" / "requirements.lock")
    runtime = pins(ROOT / "lock" / "runtime.lock")
    bootstrap = pins(ROOT / "lock" / "bootstrap.lock")
    assert "apache-beam" in runtime and "torch" not in runtime  # the image runs, it never exports
    assert {name: full.get(name) for name in runtime} == runtime
    assert bootstrap == {"uv": full["uv"]}
    for name in ("requirements.lock", "runtime.lock", "bootstrap.lock"):
        assert hashed(ROOT / "lock" / name), f"lock/{name} has a pin without a hash"


def test_the_infra_runs_the_locked_beam():
    """The launcher, the SDK worker image and the job server must be one Beam version: the lock's."""
    beam = pins(ROOT / "lock" / "runtime.lock")["apache-beam"]
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile.beam").read_text()
    assert f"ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:{beam}\n" in dockerfile
    job_server = (ROOT / "infra" / "k8s" / "flink" / "beam-job-server.yaml").read_text()
    assert re.search(rf"image: apache/beam_flink[0-9.]+_job_server:{re.escape(beam)}\n", job_server)
