"""The layer map of docs/architecture.md, enforced on the source.

Every ``import`` of every module of ``metarim/`` is read with :mod:`ast` (module level,
inside functions and under ``TYPE_CHECKING`` alike). A module may import only from its
own layer or from a layer below it; the module graph has no cycle; no module imports
another module's ``_private`` name (a private *module*, such as ``metarim.envs._ipc``, may
be imported from inside its own package).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "metarim"

LEAVES = ("_version", "config", "checkpoint", "reporting")
# layer -> the layers it imports directly (it may also import everything below those).
# Two chains, rim < meta and tasks < envs < rl, meet in algorithms; rl also imports rim
# (the RIM memory core). "" is the facade metarim/__init__.py, above everything.
MAY_IMPORT = {
    "_version": (), "config": ("_version",), "checkpoint": ("_version",),
    "reporting": ("_version",),
    "rim": LEAVES, "meta": ("rim",),
    "tasks": LEAVES, "envs": ("tasks",), "rl": ("envs", "rim"),
    "algorithms": ("meta", "rl"), "train": ("algorithms",), "evaluation": ("algorithms",),
    "sweep": ("train", "evaluation"), "cli": ("sweep",),
}
MAY_IMPORT[""] = tuple(MAY_IMPORT)


def below(layer: str) -> set[str]:
    """Every layer that ``layer`` may import from, its own included."""
    out, todo = {layer}, list(MAY_IMPORT.get(layer, ()))
    while todo:
        if (low := todo.pop()) not in out:
            out.add(low)
            todo.extend(MAY_IMPORT[low])
    return out


def layer(module: str) -> str:
    """``metarim.envs.tensor.core`` -> ``envs``; the facade ``metarim`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[int, str, str | None]]:
    """Yield ``(line, imported module, imported name or None)`` for each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) + 1 - node.level] if node.level else []
            base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (node.lineno, sub, None) if sub in known else (node.lineno, base, alias.name)


def violations(root: Path = ROOT) -> list[str]:
    """Upward imports, cycles and private-name imports under ``root`` (a ``metarim/``)."""
    paths = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in paths}
    found = []
    for name, path in paths.items():
        if layer(name) not in MAY_IMPORT:
            found.append(f"{path.relative_to(root.parent)}: {name} is in no layer of the map")
        for line, target, attr in imports(name, path, set(paths)):
            if target.split(".")[0] != root.name:
                continue
            where = f"{path.relative_to(root.parent)}:{line}: {name}"
            if layer(target) not in below(layer(name)) and layer(name) in MAY_IMPORT:
                found.append(f"{where} imports {target} from the higher layer {layer(target) or 'facade'}")
            if attr and attr.startswith("_") and not attr.endswith("__"):
                found.append(f"{where} imports the private name {target}.{attr}")
            parent, _, last = target.rpartition(".")
            if last.startswith("_") and not f"{name}.".startswith(f"{parent}."):
                found.append(f"{where} imports the private module {target} from outside {parent}")
            if target in graph and target != name:
                graph[name].add(target)
    reach = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            if (node := todo.pop()) not in seen:
                seen.add(node)
                todo.extend(graph[node])
        reach[start] = seen
    cycles = {tuple(sorted(m for m in reach[n] if n in reach[m])) for n in graph if n in reach[n]}
    return sorted(found) + [f"import cycle: {' <-> '.join(cycle)}" for cycle in sorted(cycles)]


def test_imports_follow_the_layer_map():
    found = violations()
    assert not found, "\n".join(found)


def test_the_checker_reports_each_kind_of_violation(tmp_path):
    # a tree with one violation of each kind, and allowed imports that must pass silently
    files = {
        "__init__.py": "from metarim.cli import main\n",
        "config.py": "",
        "rim/__init__.py": "",
        "rim/bad.py": "def f():\n    from metarim.algorithms import Learner\n",
        "rim/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import metarim.tasks\n",
        "meta/__init__.py": "from . import a\n",
        "meta/a.py": "import metarim.rim.bad\nimport metarim.config\n\ndef h():\n    from metarim.meta import b\n",
        "meta/b.py": "from metarim.meta import a\n\ndef g():\n    from .a import _hidden\n",
        "envs/__init__.py": "from metarim.envs import _ipc, worker\n",
        "envs/_ipc.py": "",
        "envs/worker.py": "from . import _ipc\nfrom metarim.tasks import Task\nimport metarim\n",
        "tasks/__init__.py": "from metarim.envs._ipc import send\nfrom metarim.meta.a import x\n",
        "algorithms/__init__.py": "from metarim.rl.policy import Policy\nfrom metarim.meta.maml import MAML\n",
        "cli.py": "from metarim import config\nfrom metarim._version import __version__\n",
        "extras.py": "",
    }
    for rel, text in files.items():
        (tmp_path / "metarim" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "metarim" / rel).write_text(text)
    assert violations(tmp_path / "metarim") == [
        "metarim/envs/worker.py:3: metarim.envs.worker imports metarim from the higher layer facade",
        "metarim/extras.py: metarim.extras is in no layer of the map",
        "metarim/meta/b.py:4: metarim.meta.b imports the private name metarim.meta.a._hidden",
        "metarim/rim/bad.py:2: metarim.rim.bad imports metarim.algorithms from the higher layer algorithms",
        "metarim/rim/typed.py:3: metarim.rim.typed imports metarim.tasks from the higher layer tasks",
        "metarim/tasks/__init__.py:1: metarim.tasks imports metarim.envs._ipc from the higher layer envs",
        "metarim/tasks/__init__.py:1: metarim.tasks imports the private module metarim.envs._ipc"
        " from outside metarim.envs",
        "metarim/tasks/__init__.py:2: metarim.tasks imports metarim.meta.a from the higher layer meta",
        "import cycle: metarim.meta.a <-> metarim.meta.b",
    ]
