"""The public surface imports, and `import metarim` stays light."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import metarim

# (tqdm is not listed: torch itself imports it.)
HEAVY = ("learn2learn", "higher", "minigrid", "gymnasium", "matplotlib", "scipy", "pandas")


def test_every_public_name_imports():
    assert metarim.__all__ == sorted(metarim.__all__)
    for name in metarim.__all__:
        assert getattr(metarim, name) is not None, name


def test_every_submodule_all_is_importable():
    import pkgutil

    for info in pkgutil.walk_packages(metarim.__path__, "metarim."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{info.name}.{name}"


def test_import_metarim_imports_no_heavy_package_and_is_fast():
    code = (
        "import json, sys, time; import torch; t = time.perf_counter(); import metarim; "
        "dt = time.perf_counter() - t; "
        f"print(json.dumps({{'seconds': dt, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["heavy"] == []
    assert result["seconds"] < 0.5, result
