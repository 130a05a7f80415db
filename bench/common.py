"""What the benchmarks share: running one phase in its own subprocess (so its peak RSS and its imports are its own)."""

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
