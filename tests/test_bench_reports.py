"""Every benchmark's JSON report says what it was measured on, written once by ``bench.common.write_json``."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest

from bench.common import write_json

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_a_report_records_the_commit_the_machine_and_the_versions(tmp_path):
    write_json(tmp_path / "r.json", {"events_per_s": 1.0})
    run = json.loads((tmp_path / "r.json").read_text())["run"]
    head = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert run["commit"].removesuffix("+dirty") == head.strip()
    assert run["cores"] >= 1 and run["cpu"] and run["python"]
    assert run["versions"]["onnxruntime"] and run["versions"]["apache-beam"] and run["versions"]["qdrant-edge-py"]

    again = {"events_per_s": 1.0, "run": {"commit": "abc", "cpu": "elsewhere"}}  # re-rendered from its JSON
    write_json(tmp_path / "r.json", again)
    assert json.loads((tmp_path / "r.json").read_text())["run"] == again["run"]


def test_every_bench_writes_its_json_through_write_json():
    """No bench module writes a ``json.dumps`` into a file itself (it would leave the run's facts out)."""
    offenders = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name == "common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "write_text" and node.args:
                written = ast.unparse(node.args[0])
                target = ast.unparse(node.func)
                if written.startswith("json.dumps") and ".json" in target:
                    offenders.append(f"{path.name}: {target}")
    assert offenders == []
