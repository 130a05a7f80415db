"""What the benchmarks share: running one phase in its own subprocess (so its peak RSS and its imports are its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_phase(module: str, *args: str) -> dict[str, Any]:
    """``python -m <module> --phase <args>``; its result is the JSON object on its last line of output."""
    out = subprocess.run([sys.executable, "-m", module, "--phase", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{module} phase {' '.join(args[:2])} failed:\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
