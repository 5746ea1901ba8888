"""The layout's rules, read from the import statements: dependencies run one way.

`webapp` never imports `worker` or `devtools`; `worker` never imports `devtools`; no module
imports, directly or through others, itself (late imports inside functions count too).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("webapp", "worker", "devtools")


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path, modules):
    """The first-party modules one file imports (a package's own __init__ counts only if
    named: `from webapp.alerts import service` is webapp.alerts.service)."""
    name, is_package = module_name(path), path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m.split(".")[0] in PACKAGES and m in modules}


def import_graph():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imported(p, modules) for p in files}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
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
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# a package may import only those before it: webapp, then worker, then devtools
ALLOWED = {"webapp": {"webapp"}, "worker": {"webapp", "worker"}, "devtools": set(PACKAGES)}


def wrong_way(graph):
    """{module: the imports it may not make}: webapp of worker or devtools, worker of devtools."""
    found = {}
    for module, deps in graph.items():
        wrong = sorted(d for d in deps if d.split(".")[0] not in ALLOWED[module.split(".")[0]])
        if wrong:
            found[module] = wrong
    return found


def test_dependencies_run_one_way():
    assert wrong_way(import_graph()) == {}


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_the_checks_see_a_cycle_and_a_wrong_way_import():
    graph = {"webapp.a": {"webapp.b"}, "webapp.b": {"webapp.c"}, "webapp.c": {"webapp.a"},
             "webapp.d": {"worker.x"}, "worker.x": set()}
    assert cycles(graph) == [["webapp.a", "webapp.b", "webapp.c"]]
    assert wrong_way(graph) == {"webapp.d": ["worker.x"]}
    path = ROOT / "webapp" / "alerts" / "service.py"
    assert "webapp.alerts.index" in imported(path, set(import_graph()))
