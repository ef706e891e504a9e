"""The import map of the package ``codes/sdsd``: which module imports which, and the circles among them.

An AST scan of every ``import`` (at module level and, with ``inside_functions``, inside functions too). A module
importing its own package's ``__init__`` (which has always run before it) is not an edge. Run it as a script to
print the summary, ``--map`` for every module's imports::

    python tests/import_map.py [--module-level] [--map]
"""

from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codes")


def modules(root: str = ROOT) -> dict[str, str]:
    """``{dotted module name: file}`` for every ``.py`` file of the ``sdsd`` package."""
    out = {}
    for folder, _, files in os.walk(os.path.join(root, "sdsd")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                out[dotted.removesuffix(".__init__")] = path
    return out


def import_graph(inside_functions: bool = True, root: str = ROOT) -> dict[str, set[str]]:
    """``{module: the package modules it imports}``."""
    mods = modules(root)

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in (ast.walk(tree) if inside_functions else tree.body):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                found = resolve(target) if target.startswith("sdsd") else ""
                if found and found != module and not module.startswith(found + "."):
                    graph[module].add(found)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
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
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
    return found


def cli_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(library module, CLI tool)`` pairs: a module outside ``sdsd.tools`` (and the demo, itself a command)
    importing one of ``sdsd.tools``."""
    return sorted((m, t) for m, targets in graph.items() for t in targets
                  if t.startswith("sdsd.tools") and not m.startswith("sdsd.tools") and m != "sdsd.demo")


if __name__ == "__main__":
    inside = "--module-level" not in sys.argv
    g = import_graph(inside_functions=inside)
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges "
          f"({'all, incl. inside functions' if inside else 'module level'})")
    print("import circles:", circles(g) or "none")
    print("library modules importing a CLI tool (sdsd.tools.*):", cli_imports(g) or "none")
    if "--map" in sys.argv:
        for m in sorted(g):
            print(f"  {m} -> {', '.join(sorted(g[m])) or '-'}")
