"""What the benchmarks share: one phase in its own subprocess (so its peak RSS and its imports are its own), the
plot set-up and ending, an earlier revision checked out to run beside this one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


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
