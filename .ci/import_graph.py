"""The first-party import graph, imports inside functions included: cycles and function-level imports.

import-linter sees only what its graph builder sees and cannot count the imports that sit inside
functions, so this reads the sources itself (stdlib `ast`, nothing imported). It fails when

- the first-party modules form an import cycle, counting imports inside functions (a lazy import
  hides a cycle, it does not remove it);
- `LIMIT` or more first-party import statements sit inside functions; or
- one of them has no comment saying why (on its line, or above its block of imports).

Imports under `if TYPE_CHECKING:` never run and are not edges. Importing `a.b.c` counts as an edge
to `a.b.c` only, not to the packages above it.

Usage: python .ci/import_graph.py [--limit N] [ROOT]
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("aligner", "serve", "kernels", "proto")
LIMIT = 20  # function-level first-party imports allowed: fewer than this


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported first-party module
    path: Path
    line: int
    in_function: bool
    commented: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(root, path)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that runs, with whether it sits inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_stmt(stmt, in_function)
                continue
            visit_stmt(child, in_function)

    def visit_stmt(child: ast.AST, in_function: bool) -> None:
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append((child, in_function))
        visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return found


def resolve(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The first-party modules an import statement loads by name."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [longest_module(name, modules) for name in names if name.split(".")[0] in PACKAGES]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    if base.split(".")[0] not in PACKAGES:
        return []
    # `from pkg import name` runs pkg/__init__.py first, whatever `name` is: it depends on the package.
    targets = [base] if base in modules and base != module else []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in modules else longest_module(base, modules))
    return list(dict.fromkeys(targets))


def longest_module(name: str, modules: dict[str, Path]) -> str:
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or name


def has_why_comment(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the statement's own lines, or above the block of imports it is in (isort's
    groups, separated by blank lines, are one block)."""
    if any("#" in lines[n - 1] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)):
        return True
    above = node.lineno - 2
    while above >= 0 and (not lines[above].strip() or lines[above].strip().startswith(("import ", "from "))):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def collect(root: Path) -> list[Edge]:
    modules = find_modules(root)
    edges = []
    for module, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        for node, in_function in imports(ast.parse(source, str(path))):
            for target in resolve(node, module, path.name == "__init__.py", modules):
                if target != module:
                    edges.append(
                        Edge(
                            module,
                            target,
                            path.relative_to(root),
                            node.lineno,
                            in_function,
                            has_why_comment(lines, node),
                        )
                    )
    return edges


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One shortest cycle per strongly connected component of more than one module (Tarjan's SCCs)."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(node: str) -> None:  # recursion depth is bounded by the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                strongconnect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return [shortest_cycle(graph, component) for component in components]


def shortest_cycle(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    while queue:  # breadth first inside the component, back to `start`
        node = queue.pop(0)
        for edge in graph[node]:
            if edge.target not in component:
                continue
            if edge.target == start:
                return [*paths[node], edge]
            if edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    raise AssertionError("a strongly connected component without a cycle")


def report(root: Path, limit: int) -> int:
    edges = collect(root)
    failed = False
    found = cycles(edges)
    print(f"import cycles among first-party modules (imports inside functions counted): {len(found)}")
    for cycle in found:
        failed = True
        print("  " + " -> ".join([cycle[0].source, *(edge.target for edge in cycle)]))
        for edge in cycle:
            where = "inside a function" if edge.in_function else "module level"
            print(f"    {edge.path}:{edge.line}  {edge.source} -> {edge.target} ({where})")
    lazy = sorted({(e.path, e.line, e.commented) for e in edges if e.in_function})
    print(f"first-party import statements inside functions: {len(lazy)} (must be fewer than {limit})")
    for path, line, commented in lazy:
        print(f"  {path}:{line}" + ("" if commented else "  (no comment saying why)"))
    uncommented = sum(not commented for _, _, commented in lazy)
    if len(lazy) >= limit:
        failed = True
    if uncommented:
        print(f"{uncommented} of them without a comment saying why")
        failed = True
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--limit", type=int, default=LIMIT)
    args = parser.parse_args(argv)
    return report(args.root, args.limit)


if __name__ == "__main__":
    sys.exit(main())
