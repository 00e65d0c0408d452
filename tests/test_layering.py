"""The layering of peftbench's modules, held against the code: every import, also those inside functions.

A module may import modules of its own layer or of layers below it, never above; and no two modules import each
other, directly or round a circle. A new module goes into LAYERS, or this test fails and says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "peftbench"

# Top to bottom. Each layer may use the ones below it.
LAYERS = [
    ("entry points", {"__main__", "sweep", "worker", "measure", "plan", "__init__"}),  # __init__: the lazy façade
    ("orchestration", {"runner", "console"}),
    (
        "building blocks",
        {
            "engines",
            "profiles",
            "evaluate",
            "base_row",
            "data",
            "models",
            "checks",
            "gpu_slots",
            "point",
            "validation",
            "override_hint",
        },
    ),
    ("measurement", {"callback", "profiling", "trainer", "identity", "quantize", "regional", "offload"}),
    (
        "ground floor",
        {
            "methods",
            "memory",
            "planner",
            "calibration",
            "metrics",
            "step_clock",
            "gcpause",
            "distributed",
            "records",
            "errors",
            "paths",
        },
    ),
]
REPORT = {"report", "report_data", "report_html", "report_plots", "report_merge", "folklore"}  # reads records only
REPORT_MAY_USE = {"records", "errors", "paths"} | REPORT


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def imports_of(path: Path) -> set[str]:
    """peftbench modules that `path` imports, wherever the import statement stands (module level or in a function)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("peftbench."):
                    found.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import inside peftbench
                base = f"peftbench.{base}" if base else "peftbench"
            if base == "peftbench":
                found.update(a.name for a in node.names)  # `from peftbench import runner`
            elif base.startswith("peftbench."):
                found.add(base.split(".")[1])
    return found


def graph() -> dict[str, set[str]]:
    modules = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = module_name(path)
        modules[name] = {m for m in imports_of(path) if m != name}
    for name, deps in modules.items():
        modules[name] = {d for d in deps if d in modules}  # `from peftbench import __version__` is __init__
    return modules


def layer_of(name: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        if name in members:
            return index
    return None


def test_every_module_has_a_layer():
    unplaced = [m for m in graph() if layer_of(m) is None and m not in REPORT]
    assert not unplaced, f"add these modules to a layer in tests/test_layering.py LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for name, deps in graph().items():
        if name in REPORT:
            wrong += [f"{name} -> {d} (the report reads records only)" for d in deps if d not in REPORT_MAY_USE]
            continue
        for dep in deps:
            if dep in REPORT and name not in {"sweep", "__main__", "console", "runner"}:
                wrong.append(f"{name} -> {dep} (only entry points and the console write reports)")
            elif dep not in REPORT and layer_of(dep) < layer_of(name):
                wrong.append(f"{name} ({LAYERS[layer_of(name)][0]}) -> {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The test would fail on a forbidden import hidden in a function: checked on a file made here."""
    source = tmp_path / "x.py"
    source.write_text(
        "def f():\n    from peftbench.runner import run_point\n    import peftbench.sweep\n"
        "from peftbench import records\nfrom .report import write_report\n"
    )
    assert imports_of(source) == {"runner", "sweep", "records", "report"}


@pytest.mark.parametrize("name", ["metrics", "records", "errors"])
def test_the_ground_floor_imports_nothing_of_peftbench(name):
    assert graph()[name] == set()


# -- registries carry facts: the modules that dispatch on a method or an engine never compare its name --------------
DISPATCHERS = [
    "runner",
    "validation",
    "point",
    "profiles",
    "memory",
    "planner",
    "plan",
    "callback",
    "sweep",
    "checks",
    "evaluate",
    "data",
    "models",
    "trainer",
]


def name_comparisons(path: Path, names: set[str]) -> list[str]:
    """`x == "unsloth"`, `name in ("lora", "dora")`...: comparisons with a registered name as a string literal."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare) or not any(names_a_name(side) for side in [node.left, *node.comparators]):
            continue
        for side in [node.left, *node.comparators]:
            literals = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            for lit in literals:
                if isinstance(lit, ast.Constant) and lit.value in names:
                    found.append(f"{path.name}:{node.lineno} compares with {lit.value!r}")
    return found


def names_a_name(node: ast.AST) -> bool:
    """A method's or engine's name: `engines.name(cfg)`, `method_cfg["name"]`, `x.name`, `name`, `engine`, `method`."""
    if isinstance(node, ast.Call):
        return names_a_name(node.func)
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "name"
    word = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return word in ("name", "engine", "method", "method_name", "engine_name")


def test_the_name_check_sees_comparisons_of_names(tmp_path):
    source = tmp_path / "x.py"
    source.write_text(
        'if engines.name(cfg) == "unsloth": pass\nif method_cfg["name"] in ("lora", "dora"): pass\n'
        'if method.activations == "lora": pass\n'
    )
    assert name_comparisons(source, {"unsloth", "lora", "dora"}) == [
        "x.py:1 compares with 'unsloth'",
        "x.py:2 compares with 'lora'",
        "x.py:2 compares with 'dora'",
    ]


def test_dispatch_reads_registry_facts_not_names():
    from peftbench import engines, methods

    names = set(engines.REGISTRY) | set(methods.REGISTRY)
    found = [hit for mod in DISPATCHERS for hit in name_comparisons(PACKAGE / f"{mod}.py", names)]
    assert not found, "put the fact on the registry entry instead:\n" + "\n".join(found)
