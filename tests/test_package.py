"""The public surface imports, and `import metarim` stays light."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import metarim

# (tqdm is not listed: torch itself imports it.)
HEAVY = ("learn2learn", "higher", "minigrid", "gymnasium", "matplotlib", "scipy", "pandas")


def test_every_public_name_imports():
    assert metarim.__all__ == sorted(metarim.__all__)
    for name in metarim.__all__:
        assert getattr(metarim, name) is not None, name


PRIMITIVES = {
    "GroupGRUCell", "GroupLSTMCell", "GroupLinear", "MaskedLearner", "MaskedMAML", "ParamPartition", "RIM",
    "RIMCell", "Task", "TrainConfig", "__version__", "available_backends", "make_vec_env", "masked_maml_update",
    "masked_update", "partition_parameters", "reduce_activity", "register_backend",
}
MOVED = {"A2C": "algorithms", "MAML": "algorithms", "MetaRIM": "algorithms", "PPO": "algorithms",
         "Reptile": "algorithms", "make_learner": "algorithms", "fast_adaptation": "evaluation",
         "module_activity": "evaluation", "zero_shot": "evaluation"}


def test_top_level_exports_the_primitives_only():
    assert set(metarim.__all__) == PRIMITIVES
    assert not set(MOVED) & set(dir(metarim))
    assert {"algorithms", "evaluation", "meta", "rim"} <= set(dir(metarim))


def test_public_names_are_the_same_objects_as_in_their_modules():
    from metarim import envs, meta, rim

    for name in ("MaskedLearner", "MaskedMAML", "ParamPartition", "available_backends", "masked_maml_update",
                 "masked_update", "partition_parameters", "reduce_activity", "register_backend"):
        assert getattr(metarim, name) is getattr(meta, name), name
    assert metarim.RIMCell is rim.RIMCell and metarim.make_vec_env is envs.make_vec_env


def test_moved_learners_still_resolve_with_a_deprecation_warning():
    for name, home in MOVED.items():
        module = importlib.import_module(f"metarim.{home}")
        with pytest.warns(DeprecationWarning, match=rf"use metarim\.{home}\.{name}; it is removed"):
            value = getattr(metarim, name)
        assert value is getattr(module, name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        metarim.nope  # noqa: B018


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
