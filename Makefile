# Set-up and entry points. `make demo` and `make test` are the README's two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# dvc.yaml runs `python -m stages.X`: put the venv first on PATH so that `python` is the venv's.
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"

.PHONY: venv demo test test-all bench clean-artifacts

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: venv          ## set up, then run the whole pipeline on the embedded scene
	$(RUN) dvc repro
	$(RUN) econsg metrics

test: venv          ## set up, then run the default test suite (CPU, < 10 min)
	$(RUN) python -m pytest -q -m "not slow"

test-all: venv
	$(RUN) python -m pytest -q

bench: venv
	$(PY) benchmarks/render.py
	$(PY) benchmarks/fusion.py

clean-artifacts:
	rm -rf artifacts metrics plots data checkpoints
