"""Import a script that is not in a package (``examples/``, ``benchmarks/``) as a module."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType


def load_script(path: pathlib.Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
