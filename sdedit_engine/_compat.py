"""Old flat module paths (``sdedit_engine.cycle``, ``sdedit_engine.imaging``, ``sdedit_engine.pipeline`` …).

The engine was split into ``core`` (torch math), ``io`` (images), ``pipelines`` (diffusers) and ``cli``.
For one release every old path still imports — to the very module object at its new home, so private
names and monkeypatching behave as before — and warns with a ``DeprecationWarning`` naming the new
path. One meta-path finder serves them all instead of one re-export file per old module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module (under ``sdedit_engine.``) → new module
MOVED = {
    **{m: f"core.{m}" for m in (
        "schedules", "denoisers", "noise", "validation", "samplers", "sdedit", "cycle", "drag",
        "sde_edits", "tiling", "conversions", "analytic")},
    "imaging": "io.imaging",
    "strokes": "io.strokes",
    **{m: f"pipelines.{m}" for m in ("pipeline", "drag_pipeline", "loading", "text", "lora_tuning")},
    "cli_drag": "cli.drag",
    "dragbench": "cli.dragbench",
    "sweep": "cli.sweep",
    "demo": "cli.demo",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, package: str):
        self.prefix = package + "."

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.prefix) and fullname[len(self.prefix):] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a throw-away placeholder; exec_module swaps in the real module

    def exec_module(self, module):
        old = module.__name__
        new = self.prefix + MOVED[old[len(self.prefix):]]
        warnings.warn(f"{old} has moved to {new}; the old path will be removed in the next release",
                      DeprecationWarning, stacklevel=2)
        # The import system returns whatever sys.modules holds for the name once this returns.
        sys.modules[old] = importlib.import_module(new)


def install(package: str) -> None:
    """Register the finder for ``package`` once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) and f.prefix == package + "." for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder(package))
