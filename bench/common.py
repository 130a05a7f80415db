"""What the benchmarks share: one phase in its own subprocess (so its peak RSS and its imports are its own), the
plot set-up and ending, an earlier revision checked out to run beside this one, and the JSON report with what
it ran on (``write_json``: commit, CPU, cores, the versions that matter), so anyone can re-run and compare."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VERSIONS_OF = ("onnxruntime", "apache-beam", "qdrant-edge-py", "qdrant-client", "kafka-python", "numpy", "tokenizers")


def run_phase(module: str, *args: str) -> dict[str, Any]:
    """``python -m <module> --phase <args>``; its result is the JSON object on its last line of output."""
    out = subprocess.run([sys.executable, "-m", module, "--phase", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{module} phase {' '.join(args[:2])} failed:\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay the figure out, write it to ``path`` and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def checkout(revision: str, into: Path) -> dict[str, str]:
    """``revision``'s packages under ``into``, and the environment that makes a process import them (ahead of
    this checkout's editable install: ``PYTHONPATH`` comes before the install's import hook): an earlier
    revision measured side by side with this one, in the same run and the same Python environment."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", revision], check=True, capture_output=True).stdout
    source = into / "source"
    source.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    package = into / "path" / "embedstream"
    package.mkdir(parents=True)
    for name in ("onnx_models", "pipelines", "schemas", "workers"):
        (package / name).symlink_to(source / name)
    return {"PYTHONPATH": str(into / "path")}


def _commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def run_metadata() -> dict[str, Any]:
    """What a result was measured on: commit, CPU model, cores, Python, the libraries that set its speed, when."""
    return {
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONS_OF},
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path, result: dict[str, Any], indent: int = 2) -> None:
    """A bench's JSON report with ``run`` (``run_metadata``); a result re-rendered from its JSON keeps its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "run": result.get("run") or run_metadata()}, indent=indent) + "\n")
