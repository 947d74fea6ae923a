# Two commands matter: `make demo` and `make test`. Both create .venv (Python 3.11) if
# missing and install everything once; a second run only runs the job.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metarim-installed
WHEELS := .cache/wheels

.PHONY: demo test lint docs bench tox clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build on this machine's disk (a bare `torch` would
# pull a multi-GB CUDA build); then the patched learn2learn wheel; then the package.
$(STAMP): $(PY) setup.py tools/build_learn2learn.sh
	$(PY) -m pip install --quiet "torch==2.13.0"
	tools/build_learn2learn.sh $(PY) $(WHEELS)
	$(PY) -m pip install --quiet --find-links $(WHEELS) -e ".[dev,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out results/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check metarim tests benchmarks examples

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache build *.egg-info

docs: $(STAMP)
	$(PY) -m pip install --quiet --find-links $(WHEELS) -e ".[docs]"
	$(VENV)/bin/mkdocs build --strict --site-dir .cache/site

# tox needs the other Pythons on PATH (pyenv's shims are not enough for its discovery).
tox: $(STAMP)
	PATH=$$HOME/.pyenv/versions/3.12.1/bin:$$HOME/.pyenv/versions/3.13.0/bin:$$PATH \
		$(VENV)/bin/tox -e py311,py312,py313,lint,docs
