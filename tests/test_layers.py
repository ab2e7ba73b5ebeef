"""The import layers of the code base, drawn from the source: a stage imports only the stages below it
(core < ingest < index < train < evaluate < serve; flows above all), nothing imports in a circle, and the plain
modules of `tasks/` never import Prefect (the `@task` wrappers, artifacts, events and runners live in `flows/`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("core", "ingest", "index", "train", "evaluate", "serve")
PREFECT = ("prefect", "prefect_dask", "prefect_ray")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for d in ("tasks", "flows") for p in sorted((ROOT / d).rglob("*.py"))}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module top?) for every import in the file, relative ones resolved; `from pkg
    import sub` counts as an import of the submodule when `sub` is one."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body} | {id(c) for n in tree.body if isinstance(n, ast.If | ast.Try)
                                         for c in ast.walk(n)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in modules else base, node.lineno, id(node) in top))
    return out


def stage_of(module: str) -> int | None:
    """0-5 for the stages of tasks/, 6 for flows/, None for `tasks` itself and outside modules."""
    parts = module.split(".")
    if parts[0] == "flows":
        return len(STAGES)
    if parts[0] == "tasks" and len(parts) > 1:
        return STAGES.index(parts[1]) if parts[1] in STAGES else -1
    return None


def graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool]]]]:
    modules = project_modules()
    return modules, {m: imports_of(p, m, modules) for m, p in modules.items()}


def _name(stage: int) -> str:
    return STAGES[stage] if stage < len(STAGES) else "flows"


def _where(modules: dict[str, Path], mod: str, line: int) -> str:
    return f"{modules[mod].relative_to(ROOT) if modules[mod].is_relative_to(ROOT) else modules[mod]}:{line}"


def upward_imports(modules, edges) -> list[str]:
    bad = []
    for mod, imports in edges.items():
        mine = stage_of(mod)
        for target, line, _ in imports:
            theirs = stage_of(target)
            if mine is not None and theirs is not None and target != "tasks" and theirs > mine:
                bad.append(f"{_where(modules, mod, line)}: {mod} ({_name(mine)}) imports {target} ({_name(theirs)})")
    return bad


def circles(modules, edges) -> list[list[str]]:
    adj = {m: sorted({t for t, _, _ in imps if t in modules and t != m}) for m, imps in edges.items()}
    found, state, stack = [], dict.fromkeys(adj, 0), []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in adj[m]:
            if state[t] == 1:
                found.append(stack[stack.index(t):] + [t])
            elif state[t] == 0:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in adj:
        if state[m] == 0:
            visit(m)
    return found


def prefect_in_plain_modules(modules, edges) -> list[str]:
    return [f"{_where(modules, m, line)}: {t}" for m, imps in edges.items() if m.startswith("tasks")
            for t, line, _ in imps if t.split(".")[0] in PREFECT]


def imports_inside_functions(modules, edges) -> list[str]:
    """Only the command line imports project modules inside functions (`ragtune --help` must not load Prefect)."""
    return [f"{_where(modules, m, line)}: {t}" for m, imps in edges.items() if not m.startswith("flows.cli")
            for t, line, at_top in imps if not at_top and t.split(".")[0] in ("tasks", "flows")]


def test_every_module_of_tasks_sits_in_a_stage_package():
    modules, _ = graph()
    loose = [m for m in modules if m.startswith("tasks.") and stage_of(m) == -1]
    assert not loose, f"modules outside the stage packages {STAGES}: {loose}"


def test_a_stage_imports_only_stages_below_it():
    bad = upward_imports(*graph())
    assert not bad, "imports from a higher stage:\n" + "\n".join(bad)


def test_no_import_circles():
    found = circles(*graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_plain_modules_do_not_import_prefect():
    bad = prefect_in_plain_modules(*graph())
    assert not bad, "Prefect imported by plain modules (move it to flows/):\n" + "\n".join(bad)


def test_project_imports_sit_at_module_top():
    bad = imports_inside_functions(*graph())
    assert not bad, "project imports inside functions:\n" + "\n".join(bad)


def test_the_checks_catch_planted_violations(tmp_path):
    """Each check finds a planted violation (a check that cannot fail proves nothing)."""
    modules = {"tasks.index.a": tmp_path / "a.py", "tasks.index.b": tmp_path / "b.py", "flows.x": tmp_path / "x.py"}
    edges = {"tasks.index.a": [("tasks.serve.ask", 3, True), ("tasks.index.b", 4, True), ("prefect", 5, True)],
             "tasks.index.b": [("tasks.index.a", 1, True)],
             "flows.x": [("tasks.core.workspace", 9, False)]}
    assert upward_imports(modules, edges) == [f"{tmp_path / 'a.py'}:3: tasks.index.a (index) imports "
                                              "tasks.serve.ask (serve)"]
    assert circles(modules, edges) == [["tasks.index.a", "tasks.index.b", "tasks.index.a"]]
    assert prefect_in_plain_modules(modules, edges) == [f"{tmp_path / 'a.py'}:5: prefect"]
    assert imports_inside_functions(modules, edges) == [f"{tmp_path / 'x.py'}:9: tasks.core.workspace"]
