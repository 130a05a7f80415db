"""The package's import graph, read from the source (ast): layers import one way, and no module imports itself
back through others — not even through an import inside a function, which only hides a cycle until the day that
function runs first."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("schemas", "onnx_models", "pipelines", "workers")  # each may import only the ones before it
RUNS_BEAM = {"ingest", "demo"}  # the commands that run a pipeline; every other one must start without Beam
BLOCK_BEAM = """
import importlib, sys
class NoBeam:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "apache_beam":
            raise ImportError("apache_beam imported by a command that runs no pipeline")
sys.meta_path.insert(0, NoBeam())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def _modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found["embedstream." + ".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but what sits under ``if TYPE_CHECKING:`` (annotations only: never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports at run time, module level or inside functions; ``from pkg import
    sub`` names the submodule, not the package."""
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedstream."):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in modules)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, set())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_checker_finds_a_cycle_and_only_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_imports_itself_back_through_others():
    assert _cycles(_graph()) == []


def test_layers_import_one_way():
    upward = [
        (name, dep)
        for name, deps in _graph().items()
        for dep in deps
        if LAYERS.index(dep.split(".")[1]) > LAYERS.index(name.split(".")[1])
    ]
    assert upward == [], "schemas ← onnx_models ← pipelines ← workers"


def _command_imports() -> dict[str, set[str]]:
    """Each CLI command's function → the project modules it imports (``workers/cli/commands.py``)."""
    tree = ast.parse((ROOT / "workers" / "cli" / "commands.py").read_text())
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = {
                n.module
                for n in ast.walk(node)
                if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("embedstream.")
            }
    return found


def test_commands_that_run_no_pipeline_start_without_apache_beam():
    """``search``, ``serve``, ``spaces``, ``store`` … import what they use with ``apache_beam`` made unimportable
    (its import alone is about a second here)."""
    commands = _command_imports()
    assert commands.keys() > RUNS_BEAM and {"search", "serve", "spaces", "store", "tail_embeddings"} < commands.keys()
    modules = sorted(
        {"embedstream.workers.cli"} | {m for name, ms in commands.items() if name not in RUNS_BEAM for m in ms}
    )
    # serve's app is built inside serve(): import it too
    modules.append("embedstream.workers.api.app")
    run = subprocess.run([sys.executable, "-c", BLOCK_BEAM, *modules], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    shows = subprocess.run(
        [sys.executable, "-c", BLOCK_BEAM, "embedstream.pipelines.ingest"], capture_output=True, text=True, timeout=120
    )
    assert "apache_beam imported" in shows.stderr, "the blocker must really block"


def test_test_modules_share_helpers_not_each_other():
    """What several test modules use lives in a helper module (``tests/helpers.py`` and its kin), never in another
    test module: importing one runs its module-level set-up and fixtures, and ties their markers together."""
    tests = ROOT / "tests"
    crossing = [
        f"{path.name}: {node.module}"
        for path in sorted([*tests.glob("*.py"), *(ROOT / "bench").glob("*.py")])
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")
    ]
    assert crossing == []
