"""The package's floors: imports flow one way (no circle), and the display layer never imports torch."""
from __future__ import annotations

import ast
import subprocess
import sys

from sublora import paths

DISPLAY = ("book", "plots", "claims", "search_record", "stats", "calibrate", "design", "params", "stamps")


def _imports(module: str) -> set[str]:
    """The sublora modules `module` imports anywhere in its file (top level or inside a function)."""
    tree = ast.parse((paths.PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "sublora":
            found |= {a.name for a in node.names}
    return {m.split(".")[0] for m in found}


def test_the_import_graph_has_no_circle():
    modules = {p.stem for p in paths.PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {m: _imports(m) & modules for m in modules}
    state: dict[str, str] = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import circle: {' -> '.join(trail + [m])}"
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = "done"

    for m in sorted(modules):
        visit(m, [])


def test_the_display_layer_and_its_caveat_import_no_torch():
    code = ("import sys\nfrom sublora import " + ", ".join(DISPLAY) + "\n"
            "plots.caveat('organism'); plots.caveat('smoke')\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
