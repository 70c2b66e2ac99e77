"""The package layout stays true: core imports only torch/numpy/stdlib/core, old module paths still
import (same module object, with a DeprecationWarning), the ``sdedit`` entry points work, and
``sdedit --help`` builds its parser without importing torch."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdedit_engine._compat import MOVED

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "sdedit_engine" / "core"
ALLOWED_THIRD_PARTY = {"torch", "numpy"}


def _py(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute-or-relative module) of every import statement, wherever it sits in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def core_violations(core: Path = CORE) -> list[str]:
    """Imports under ``core`` that reach outside torch, numpy, the standard library and core itself."""
    bad = []
    for path in sorted(core.rglob("*.py")):
        depth = len(path.relative_to(core).parts)  # 1 for core/x.py: "." is core, ".." leaves it
        for line, mod in _imports(path):
            where = f"{path.relative_to(core.parent)}:{line}: {mod}"
            level = len(mod) - len(mod.lstrip("."))
            if level:
                if level > depth:
                    bad.append(where)
                continue
            top = mod.split(".")[0]
            if top == "sdedit_engine":
                if not mod.startswith("sdedit_engine.core"):
                    bad.append(where)
            elif top not in ALLOWED_THIRD_PARTY and top not in sys.stdlib_module_names and top != "__future__":
                bad.append(where)
    return bad


def test_core_imports_only_torch_numpy_stdlib_and_core():
    assert core_violations() == []


def test_the_layering_check_catches_what_it_should(tmp_path):
    core = tmp_path / "core"
    (core / "sub").mkdir(parents=True)
    (core / "ok.py").write_text("import math, torch\nimport numpy as np\nfrom .samplers import x\n")
    (core / "bad.py").write_text("def f():\n    from PIL import Image\n    from ..io import imaging\n")
    (core / "sub" / "deep.py").write_text("from .. import ok\nfrom ...pipelines import pipeline\nimport diffusers\n")
    bad = {b.rsplit(": ", 1)[1] for b in core_violations(core)}
    assert bad == {"PIL", "..io", "...pipelines", "diffusers"}


#: layer → the package layers it may import (dependency direction core ← io, pipelines, nodes ← cli)
MAY_IMPORT = {
    "sdedit_engine.io": {"sdedit_engine.core", "sdedit_engine.io"},
    "sdedit_engine.pipelines": {"sdedit_engine.core", "sdedit_engine.io", "sdedit_engine.pipelines"},
    "nodes": {"sdedit_engine.core", "sdedit_engine.io", "nodes"},
}


def _absolute(path: Path, module: str) -> str:
    """``module`` as written in ``path`` (relative or absolute), made absolute against the repo root."""
    level = len(module) - len(module.lstrip("."))
    if not level:
        return module
    base = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module[level:]] if module[level:] else []))


def layer_violations() -> list[str]:
    bad = []
    for layer, allowed in MAY_IMPORT.items():
        for path in sorted((ROOT / layer.replace(".", "/")).rglob("*.py")):
            for line, mod in _imports(path):
                target = _absolute(path, mod)
                top = ".".join(target.split(".")[:2]) if target.startswith("sdedit_engine.") else target.split(".")[0]
                if (top.startswith("sdedit_engine.") or top == "nodes") and top not in allowed:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {mod}")
    for path in sorted((ROOT / "sdedit_engine").rglob("*.py")):  # only the CLI itself imports the CLI
        if "cli" not in path.relative_to(ROOT).parts:
            bad += [f"{path.relative_to(ROOT)}:{line}: {mod}" for line, mod in _imports(path)
                    if _absolute(path, mod).startswith(("sdedit_engine.cli", "nodes"))]
    return bad


def test_io_pipelines_and_nodes_import_only_the_layers_below():
    assert layer_violations() == []


def test_old_module_paths_import_the_new_modules_with_a_warning():
    names = sorted(MOVED)
    code = f"""
import importlib, json, sys, warnings
import sdedit_engine
result = {{}}
for old in {names!r}:
    new = "sdedit_engine." + sdedit_engine._compat.MOVED[old]
    module = importlib.import_module(new)
    sys.modules.pop("sdedit_engine." + old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        legacy = importlib.import_module("sdedit_engine." + old)
    result[old] = [legacy is module, [str(w.message) for w in caught if w.category is DeprecationWarning]]
print(json.dumps(result))
"""
    r = _py(code, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result) >= {"cycle", "drag", "sde_edits", "analytic", "conversions", "tiling", "imaging", "demo",
                           "pipeline", "cli_drag"}
    for old, (same, warned) in result.items():
        assert same, f"sdedit_engine.{old} is not the module at its new home"
        assert len(warned) == 1 and f"sdedit_engine.{old} has moved to sdedit_engine.{MOVED[old]}" in warned[0], old


def test_help_does_not_import_torch_pil_or_diffusers():
    r = _py("import sys\nfrom sdedit_engine.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nheavy = sorted({'torch', 'PIL', 'diffusers', 'transformers', 'numpy'} & set(sys.modules))"
            "\nprint('HEAVY', heavy)")
    assert r.returncode == 0, r.stderr
    assert "usage: sdedit" in r.stdout and "drag" in r.stdout and "demo" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_python_dash_m_and_the_console_script():
    r = subprocess.run([sys.executable, "-m", "sdedit_engine.cli", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "usage: sdedit" in r.stdout, r.stderr
    script = shutil.which("sdedit", path=str(Path(sys.executable).parent)) or shutil.which("sdedit")
    if script is None:
        pytest.skip("the sdedit console script is not installed in this environment (pip install -e .)")
    r = subprocess.run([script, "strokes", "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "usage: sdedit strokes" in r.stdout, r.stderr


def test_module_docstrings_cite_the_paper_or_this_repo():
    """Docstrings point at papers or files in this repository, never at documents outside it."""
    outside = ("shared/", "reference/", "spec §", "../")
    hits = []
    for path in sorted((ROOT / "sdedit_engine").rglob("*.py")) + sorted((ROOT / "nodes").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        hits += [f"{path.relative_to(ROOT)}: {o}" for o in outside if o in doc]
    assert hits == []
