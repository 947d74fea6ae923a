"""Packaging for metarim.

Why each pin:

* ``learn2learn==0.2.0``: the latest release; its PyPI sdist does not build on
  Python >= 3.11, so ``tools/build_learn2learn.sh`` patches exactly this version into a
  local wheel (see docs/installation.md). A different version would not get the patch.
* ``higher==0.2.1``: the last release of an unmaintained library that rewrites
  ``nn.Module`` internals at run time; we test against this exact version only.
* ``torch>=2.2,<3``: we use ``torch.func`` and ``weights_only`` checkpoints (2.2+).
  The range admits the 2.13.0 CPU build that lies on our machines; pip would otherwise
  download a multi-GB CUDA build.
* ``minigrid>=3.2``: BabyAI levels with gymnasium 1.x API (needs Python >= 3.11).
"""

from __future__ import annotations

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "metarim" / "_version.py").read_text(), re.M
).group(1)

setup(
    name="metarim",
    version=VERSION,
    description="Meta-RIM: fast and slow learning of recurrent independent mechanisms",
    long_description=(HERE / "README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["metarim", "metarim.*"]),
    install_requires=[
        "torch>=2.2,<3",
        "learn2learn==0.2.0",
        "higher==0.2.1",
        "minigrid>=3.2,<4",
        "gymnasium>=1.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "ruff>=0.5", "tox>=4"],
        "docs": ["mkdocs>=1.5", "mkdocstrings[python]>=0.24", "pymdown-extensions>=10"],
        "tensorboard": ["tensorboard>=2.10"],
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["metarim=metarim.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
