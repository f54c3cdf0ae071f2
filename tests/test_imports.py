"""The package's floors: every module stands on a declared floor, imports run only to its own floor or below,
no import circle, and the display layer never imports torch.

The graph reads every form of import, anywhere in a file (top level, a function, an `if __name__` block):
`import sublora.x`, `from sublora import x`, `from sublora.x import y`, and relative imports of any level,
in subpackages too. A package's `__main__` is its own module: the entry point `python -m` runs.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sublora import paths

# The floors, from the ground up (the Layout table in book/reference.md; DESIGN: imports run downward only).
FLOORS = {
    "ground": ["paths", "quiet", "device", "prompts", "chat", "numbers", "cache", "yamlfile", "settings", "numfmt", "terms", "config", "identity", "params",
               "command", "stamps", "results", "organism_recipe", "design"],
    "training": ["optim", "finetune"],  # the loops every model is trained with, the organism's pretraining too
    "weights": ["organism", "smol", "models"],
    "compute": ["teacher", "evaluate", "sharded", "localize", "auxlogit"],
    "running": ["artifacts", "pipeline", "tables", "runner", "rates", "plan"],
    "statistics": ["stats", "rules", "simulate", "claims", "sequence", "aux_claims", "summaries", "calibrate", "power",
                   "scoreboard"],
    "presentation": ["caveats", "plots", "readings", "ladder", "search_record", "record", "pages", "book"],
    "notebooks' entry": ["notebook"],
    "tools": ["reproduce", "bench", "gpucheck", "search", "cli", "__main__", "stats.__main__"],
}
LEVEL = {m: i for i, (_, ms) in enumerate(FLOORS.items()) for m in ms}
DISPLAY = ("book", "caveats", "plots", "claims", "aux_claims", "readings", "summaries", "search_record", "stats",
           "rules", "simulate", "calibrate", "power", "scoreboard", "design", "params", "stamps", "command")


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under root, by its name below `sublora` ('stats', 'stats.__main__')."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known) -> set[str]:
    """The package's modules that the module `name` (file `path`) imports, in any form, anywhere in it."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["sublora", *package][: len(package) + 2 - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names] + [module]
        else:
            continue
        for t in targets:
            if t == "sublora" or t.startswith("sublora."):
                inner = t.removeprefix("sublora").lstrip(".")
                while inner and inner not in known:  # `from sublora.stats import t_interval` is stats
                    inner = inner.rpartition(".")[0]
                if inner and inner != name:
                    found.add(inner)
    # `from sublora.x import y` also names the module x when y is one of its names, not a module: keep the
    # deepest module per import line (done above); a package's face adds no edge of its own
    return found


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports(m, p, known) & set(known) for m, p in known.items()}


def check(root: Path) -> list[str]:
    """Every fault of the house under root: a module on no floor, an import running up, a circle."""
    g = graph(root)
    faults = [f"{m} stands on no floor: add it to FLOORS (and to the Layout table in book/reference.md)"
              for m in g if m not in LEVEL]
    faults += [f"{m} ({_floor(m)}) imports {n} ({_floor(n)}): an import running back up"
               for m, ns in g.items() for n in sorted(ns) if m in LEVEL and n in LEVEL and LEVEL[n] > LEVEL[m]]
    state: dict[str, str] = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        if state.get(m) == "open":
            faults.append("import circle: " + " -> ".join(trail[trail.index(m):] + [m]))
            return
        state[m] = "open"
        for n in sorted(g[m]):
            visit(n, trail + [m])
        state[m] = "done"

    for m in sorted(g):
        visit(m, [])
    return faults


def _floor(m: str) -> str:
    return next(k for k, ms in FLOORS.items() if m in ms)


def test_every_module_stands_on_a_floor_imports_run_downward_and_there_is_no_circle():
    assert check(paths.PACKAGE) == []


def test_every_floor_names_a_module_that_exists():
    assert sorted(set(LEVEL) - set(modules(paths.PACKAGE))) == []


@pytest.mark.parametrize("line", [
    "import sublora.power", "from sublora.power import main", "from sublora import power",
    "from .power import main", "from . import power", "from .. import power",
])
def test_the_check_reads_every_form_of_import(tmp_path, line):
    """A circle closed by any form of import is found, also inside a function or an `if __name__` block and
    in a subpackage (the circle of 24e4310: stats' `__main__` block imported sublora.power)."""
    root = tmp_path / "sublora"
    (root / "stats").mkdir(parents=True)
    (root / "power.py").write_text("from .stats import t_interval\n")
    where = root / "stats" / "__init__.py" if line.startswith("from ..") else root / "stats.py"
    where.write_text(textwrap.dedent(f"""\
        def t_interval():
            pass

        if __name__ == "__main__":
            {line}
        """))
    if where.name == "stats.py":
        (root / "stats" / "__init__.py").unlink(missing_ok=True)
        (root / "stats").rmdir()
    assert any(f.startswith("import circle") for f in check(root)), check(root)


def test_an_import_running_up_is_found(tmp_path):
    root = tmp_path / "sublora"
    root.mkdir()
    (root / "paths.py").write_text("def f():\n    import sublora.book\n")
    (root / "book.py").write_text("")
    assert check(root) == ["paths (ground) imports book (presentation): an import running back up"]


def test_the_display_layer_and_its_caveat_import_no_torch():
    code = ("import sys\nfrom sublora import " + ", ".join(DISPLAY) + "\n"
            "caveats.caveat('organism'); caveats.caveat_line('organism'); plots.show_caveat('smoke')\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
