"""No import cycle among the package's modules: none at import time, none through a lazy import
inside a function (a cycle hidden that way is still one module importing back up the stack)."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it installs as
PACKAGES = {ROOT / "c2f_attacks": "c2f_attacks", ROOT / "exporters": "c2f_attacks.exporters"}
#: a lazy cycle outside the transfer modules, left to its owners: the hierarchies package imports
#: imagenet_grouping inside a function, and imagenet_grouping imports from the package
KNOWN = [{"c2f_attacks.hierarchies", "c2f_attacks.hierarchies.imagenet_grouping"}]
#: the transfer job's modules (the job, its metrics, figures, the ONNX helpers it uses, its CLI):
#: each is imported first in a fresh set of modules
TRANSFER_MODULES = (
    "c2f_attacks.figures", "c2f_attacks.runner.transfer", "c2f_attacks.evaluation.transfer",
    "c2f_attacks.exporters.input_quantization", "c2f_attacks.exporters.variant_files",
    "c2f_attacks.cli.export", "c2f_attacks.cli.transfer", "c2f_attacks.data",
)  # fmt: skip


def modules(packages: dict[Path, str]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under the source folders."""
    found = {}
    for folder, package in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join([package, *parts])] = path
    return found


def import_graph(packages: dict[Path, str]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its code (functions included).
    Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``, unless ``a.b`` is being imported
    anyway: the root package, and the packages of the importing module itself."""
    known = modules(packages)
    roots = set(packages.values())

    def deepest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in filter(None, map(deepest, targets)):
                if target != name:
                    graph[name].add(target)
                parent = target.rpartition(".")[0]
                while parent and parent not in roots:
                    if not name.startswith(f"{parent}."):
                        graph[name].add(parent)
                    parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, edges = work[-1]
            nxt = next((w for w in edges), None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_analysis_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from pkg.high import g  # lazy\n")
    (package / "high.py").write_text("from pkg import low\n\ndef g():\n    pass\n")
    (package / "alone.py").write_text("from . import low\n")
    assert cycles(import_graph({package: "pkg"})) == [{"pkg.low", "pkg.high"}]


def test_no_module_imports_back_up_the_stack():
    graph = import_graph(PACKAGES)
    assert "c2f_attacks.runner.transfer" in graph["c2f_attacks.cli.transfer"]  # edges are seen
    assert cycles(graph) == KNOWN


def test_each_transfer_module_imports_first_in_a_fresh_interpreter():
    """Each module of the transfer job imported before any other package module, then every
    module but the entry points (``__main__`` runs the command line): a cycle at import time
    would fail here."""
    names = sorted(m for m in modules(PACKAGES) if not m.endswith(".__main__"))
    script = textwrap.dedent(f"""
        import importlib, sys
        for entry in {list(TRANSFER_MODULES)!r}:
            for name in [m for m in sys.modules if m.split(".")[0] == "c2f_attacks"]:
                del sys.modules[name]
            importlib.import_module(entry)
            for name in {names!r}:
                importlib.import_module(name)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
