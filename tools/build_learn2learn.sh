#!/usr/bin/env bash
# Build a learn2learn 0.2.0 wheel that installs on Python >= 3.11, into a local cache.
#
# Why: the 0.2.0 sdist on PyPI (the latest release) ships Cython-generated C files made
# by an old Cython that do not compile against CPython >= 3.11 headers. We regenerate
# them with a current Cython. Its __init__ also imports `learn2learn.vision`, which needs
# torchvision; PyPI's torchvision does not import beside the CPU torch build we use, so
# the import is made optional (it still works when torchvision is installed), and
# torchvision, gsutil and qpth are dropped from install_requires (only vision/optim
# extras use them). Likewise `learn2learn.gym` needs OpenAI gym 0.26, unmaintained and
# broken with NumPy 2 (it prints a warning banner on import): it is made optional and
# dropped too; metarim uses gymnasium. See docs/installation.md.
#
# Usage: tools/build_learn2learn.sh PYTHON [WHEEL_DIR]
#   PYTHON     the interpreter the wheel is for (e.g. .venv/bin/python)
#   WHEEL_DIR  cache folder (default: .cache/wheels); reused if a matching wheel exists
set -euo pipefail

PY=${1:?usage: tools/build_learn2learn.sh PYTHON [WHEEL_DIR]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# absolute path without resolving symlinks (a venv python is a symlink)
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")";; *) PY=$(command -v "$PY");; esac
WHEELS=${2:-$ROOT/.cache/wheels}
VERSION=0.2.0
mkdir -p "$WHEELS"
WHEELS=$(cd "$WHEELS" && pwd)

TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if ls "$WHEELS"/learn2learn-$VERSION-$TAG-*.whl >/dev/null 2>&1; then
    echo "learn2learn $VERSION wheel for $TAG already in $WHEELS"
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SDIST_CACHE=$ROOT/.cache/sdist
mkdir -p "$SDIST_CACHE"
if [ ! -f "$SDIST_CACHE/learn2learn-$VERSION.tar.gz" ]; then
    "$PY" -m pip download --quiet --no-deps --no-binary learn2learn \
        "learn2learn==$VERSION" -d "$SDIST_CACHE"
fi
tar xzf "$SDIST_CACHE/learn2learn-$VERSION.tar.gz" -C "$WORK"
SRC=$WORK/learn2learn-$VERSION

# Build tools in the target interpreter (binary wheels: seconds, not minutes).
"$PY" -m pip install --quiet "cython>=3" setuptools wheel

# 1. Regenerate the stale C sources with the current Cython.
(cd "$SRC" && "$PY" -m cython -3 learn2learn/data/*.pyx)

# 2. Make `vision` optional and drop the unusable requirements.
"$PY" - "$SRC" <<'PYEOF'
import pathlib
import sys

src = pathlib.Path(sys.argv[1])
init = src / "learn2learn" / "__init__.py"
text = init.read_text()
for name, needs in (("vision", "torchvision"), ("gym", "the unmaintained gym package")):
    old = f"from . import {name}\n"
    new = (
        f"try:  # patched by metarim: {name} needs {needs}, which is optional\n"
        f"    from . import {name}\n"
        "except ImportError:  # pragma: no cover\n"
        "    pass\n"
    )
    if old not in text:
        sys.exit(f"learn2learn/__init__.py has changed: cannot patch the {name} import")
    text = text.replace(old, new)
init.write_text(text)

setup = src / "setup.py"
text = setup.read_text()
for req in ("'torchvision>=0.3.0',", "'gsutil',", "'qpth>=0.0.15',", "'gym>=0.14.0',"):
    if req not in text:
        sys.exit(f"setup.py has changed: requirement {req} not found")
    text = text.replace(req, "")
setup.write_text(text)
PYEOF

# 3. Build the wheel from the regenerated C (no Cython needed at build time).
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHEELS" "$SRC"
ls "$WHEELS"/learn2learn-$VERSION-$TAG-*.whl
