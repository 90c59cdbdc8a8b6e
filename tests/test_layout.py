"""The package's layout is its architecture: the core (ddpm/*.py) imports nothing of ddpm/eval, ddpm/tools or
ddpm/app; eval imports only the core; tools and app sit on top; and no import circle anywhere, counting the
imports inside functions too. Read from the source (ast), so it holds whatever runs first."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ddpm")
LAYERS = {"eval": 1, "tools": 2, "__main__": 2, "app": 2}


def _module_name(path):
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph():
    """{module: {modules of the package it imports}}, every import statement, at any depth of the file."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                modules[_module_name(path)] = path
    graph = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            targets |= {n for n in names if n in modules and n != module}
        # `from . import x` names the package itself as well as x: keep the submodule only
        graph[module] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)} - {"ddpm"}
    return graph


def layer(module):
    """0 for the core (ddpm/*.py), 1 for ddpm/eval, 2 for ddpm/tools, ddpm/app and `python -m ddpm`."""
    part = module.split(".")[1] if "." in module else "core"
    return LAYERS.get(part, 0)


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "ddpm.schedule" in graph["ddpm.diffusion"] and "ddpm.sampling" in graph["ddpm.app.reverse"]
    assert "ddpm.app.curves" in graph["ddpm.app.explore"]                # `from . import curves, neighbours`


def test_no_import_circle():
    graph = import_graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_arrows_run_down_only():
    graph = import_graph()
    assert layer("ddpm.sampling") == 0 and layer("ddpm.eval.judge") == 1 and layer("ddpm.app.grid") == 2
    upward = [(m, t) for m, targets in graph.items() for t in targets if layer(t) > layer(m)]
    assert not upward, f"imports that run up a layer: {upward}"
    top = lambda module: module.split(".")[1] if "." in module else ""
    across = [(m, t) for m, targets in graph.items() for t in targets if {top(m), top(t)} == {"app", "tools"}]
    assert not across, f"the app and the tools import each other: {across}"
