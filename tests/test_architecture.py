"""The package's layering, as ARCHITECTURE.md states it, checked on the source.

Every ``import`` statement of every module (at module top or inside a function) is read with
``ast``; the rules below are the table "which package may import which" of ARCHITECTURE.md. A
subprocess then imports every torch-free module and checks that torch was not loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "baselines", "pipeline")

#: pipeline/analysis modules that run one whole analysis (a "tool"); they may not import each other
ANALYSIS_TOOLS = ("experiment", "cross_device", "explain_image", "saliency", "audit")
#: modules (prefixes) whose job is the learned models; only they may import torch
LEARNED = ("pipeline.srnet", "pipeline.analysis.audit.cnn")
#: the longest a module may be without its docstring saying why
MAX_LINES = 600
LONG_MODULE_MARKER = "Why one module:"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of the project modules ``name`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            # `from pipeline.analysis import saliency` imports the submodule
            out.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES)
    return {m for m in out if m.split(".")[0] in PACKAGES + ("torch",)}


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    """The layer a project module belongs to (see ARCHITECTURE.md)."""
    parts = name.split(".")
    if parts[0] != "pipeline":
        return parts[0]
    if len(parts) == 1:
        return "pipeline"
    if len(parts) == 2 and f"pipeline.{parts[1]}" in MODULES and not MODULES[name].name == "__init__.py":
        return "infra" if parts[1] in ("logs",) else "entry"
    if parts[1] == "analysis" and len(parts) >= 3:
        tool = parts[2]
        owner = next((t for t in ANALYSIS_TOOLS if tool == t or tool.startswith(t + "_")), None)
        if owner is not None:  # a tool's own modules (experiment_methods, cross_device_cells) belong to it
            return f"tool:{owner}"
        return "analysis-lower"
    return parts[1]


#: layer -> the layers it may import (besides itself, the standard library and third-party packages)
ALLOWED = {
    "kernels": set(),
    "baselines": {"kernels"},
    "infra": set(),
    "data": {"infra", "kernels"},
    "sim": {"infra", "data", "kernels"},
    "features": {"infra", "data", "kernels", "baselines"},
    "srnet": {"infra", "data", "features", "kernels"},
    "analysis-lower": {"infra", "data", "sim", "features", "kernels", "baselines", "srnet"},
    "dating": {"infra", "data", "features", "kernels", "baselines", "analysis-lower"},
    "pipeline": set(),
    "analysis": set(),
}


def _allowed(source: str, target: str) -> bool:
    src, dst = _layer(source), _layer(target)
    if dst in ("pipeline", "analysis"):  # the package __init__s
        return True
    if src == dst:
        return True
    if src == "entry":
        return dst != "entry" or target in ("pipeline.ml_age",) and source == "pipeline.saliency"
    if src.startswith("tool:"):
        return dst in ALLOWED["analysis-lower"] | {"analysis-lower"}
    return dst in ALLOWED.get(src, set())


def test_every_project_import_follows_the_layering():
    bad = sorted(f"{source} imports {target} ({_layer(source)} -> {_layer(target)})"
                 for source, targets in IMPORTS.items() for target in targets
                 if target in MODULES and not _allowed(source, target))
    assert not bad, "imports against ARCHITECTURE.md's layering:\n" + "\n".join(bad)


def test_analysis_tools_do_not_import_each_other():
    pairs = sorted(f"{s} -> {t}" for s, targets in IMPORTS.items() for t in targets
                   if t in MODULES and _layer(s).startswith("tool:") and _layer(t).startswith("tool:")
                   and _layer(s) != _layer(t))
    assert not pairs, pairs


def test_the_library_never_imports_an_entry_point():
    pairs = sorted(f"{s} -> {t}" for s, targets in IMPORTS.items() for t in targets
                   if t in MODULES and _layer(t) == "entry" and _layer(s) != "entry")
    assert not pairs, pairs


def test_only_the_learned_model_code_imports_torch():
    pairs = sorted(s for s, targets in IMPORTS.items()
                   if any(t == "torch" or t.startswith("torch.") for t in targets)
                   and not s.startswith(LEARNED))
    assert not pairs, pairs


def test_kernels_and_baselines_do_not_import_the_pipeline():
    pairs = sorted(f"{s} -> {t}" for s, targets in IMPORTS.items() for t in targets
                   if s.split(".")[0] in ("kernels", "baselines") and t.split(".")[0] == "pipeline")
    assert not pairs, pairs


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("pipeline")))
def test_a_long_module_says_why_it_is_one_module(name):
    path = MODULES[name]
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert LONG_MODULE_MARKER in doc, (f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): split it by job, "
                                       f"or say in its docstring, after '{LONG_MODULE_MARKER}', why it is one")


def test_importing_every_torch_free_module_does_not_import_torch():
    names = sorted(n for n in MODULES if not n.startswith(LEARNED) and not n.endswith("__main__")
                   and not any(n.startswith(p + ".") for p in LEARNED))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'torch' not in sys.modules, f'importing {name} imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
