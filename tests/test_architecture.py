"""The package's layers, read from its source (docs/ARCHITECTURE.md): the core and the optimization catalogue import
nothing from the layers above them, no module imports itself back through others, and imports sit at the top of
files except for optional heavy packages, each with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wan_ui"

# The layers the core (`wan_ui.core`) and the catalogue (`wan_ui.optim`) must never import.
UPPER_LAYERS = ("wan_ui.ui", "wan_ui.bench", "wan_ui.train", "wan_ui.tune", "wan_ui.parallel", "wan_ui.cluster",
                "wan_ui.cli", "wan_ui.__main__")
LOWER_LAYERS = ("wan_ui.core", "wan_ui.optim")

# Packages that may be imported inside a function: optional or heavy, needed only on one path.
OPTIONAL = {
    "bitsandbytes": "CUDA-only quantization, imported when an NF4/int8 option or 8-bit Adam is chosen",
    "torchao": "FP8 and int8 kernels, imported when such an option is chosen",
    "open_clip": "the CLIP model behind clip_score, loaded only when quality metrics run",
    "lpips": "the LPIPS model, loaded only when quality metrics run",
    "torchvision": "LPIPS' backbone, loaded only with it",
    "torchmetrics": "SSIM, imported only when quality metrics run",
    "matplotlib": "charts, drawn only when a report is written; keeps the benchmark's import path light",
    "playwright": "the browser of the screenshot script and its tests",
    "spaces": "Hugging Face ZeroGPU, present only on a Space",
    "pynvml": "NVML, read only on machines with an NVIDIA driver",
    "ray": "a Ray cluster, connected only by --ray (app and benchmark); optional at run time (issue 24)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, names: list[str]) -> set[str]:
    """`from module import names` -> the wan_ui modules it loads (a name may be a submodule)."""
    found = set()
    for name in names:
        sub = f"{module}.{name}"
        found.add(sub if sub in MODULES else module)
    return {m for m in found if m in MODULES}


def imports_of(path: Path) -> list[tuple[str, int, bool, ast.stmt]]:
    """(imported top-level name or wan_ui module, line, inside a function?, node) for each import of a file."""
    tree = ast.parse(path.read_text(), str(path))
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    rows = []
    for node in ast.walk(tree):
        nested = id(node) in inside
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name if alias.name in MODULES else alias.name.split(".")[0]
                rows.append((target, node.lineno, nested, node))
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; the package imports absolutely"
            if node.module.startswith("wan_ui"):
                for target in _resolve(node.module, [a.name for a in node.names]):
                    rows.append((target, node.lineno, nested, node))
            else:
                rows.append((node.module.split(".")[0], node.lineno, nested, node))
    return rows


GRAPH = {name: {t for t, *_ in imports_of(path) if t in MODULES and t != name} for name, path in MODULES.items()}


def test_the_package_has_its_layers():
    for layer in ("core", "optim", "parallel", "cluster", "ui", "bench", "train"):
        assert f"wan_ui.{layer}" in MODULES, f"wan_ui/{layer}/ is missing"
    flat = [n for n in MODULES if n.count(".") == 1 and n not in ("wan_ui.cli", "wan_ui.__main__")
            and not (PACKAGE / n.split(".")[1]).is_dir()]
    assert not flat, f"modules outside a layer: {flat}"


@pytest.mark.parametrize("lower", LOWER_LAYERS)
def test_lower_layers_import_nothing_above_them(lower):
    bad = [f"{name} imports {target}" for name, targets in GRAPH.items()
           if name == lower or name.startswith(lower + ".")
           for target in targets if target.startswith(UPPER_LAYERS)]
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
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

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_imports_sit_at_the_top_except_optional_packages_with_a_reason():
    bad = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for target, line, nested, node in imports_of(path):
            if not nested:
                continue
            if target.split(".")[0] not in OPTIONAL:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {target} imported inside a function")
            elif not any("#" in text for text in lines[node.lineno - 2:node.end_lineno]):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {target} imported lazily without a comment saying why")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_sys_path_edits():
    offenders = [str(p.relative_to(ROOT)) for p in [*ROOT.glob("scripts/*.py"), *PACKAGE.rglob("*.py"), ROOT / "app.py"]
                 if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not offenders
