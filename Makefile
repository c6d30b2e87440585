# Set-up and entry points. `make demo` and `make test` are the README's two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# dvc.yaml runs `python -m stages.X`: put the venv first on PATH so that `python` is the venv's.
RUN := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: venv lock demo test test-all bench clean-artifacts

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# After changing pyproject's dependencies (delete a pin that a new range excludes first): re-pin every package.
lock: venv
	{ grep "^#" constraints.txt; $(PY) -m pip freeze --all --exclude-editable | grep -v "^pip=="; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

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

# The next `make demo` reruns every stage. metrics/*.json and plots/*.csv are git's (committed figures): a rerun
# rewrites them, so they are kept here; plots' pictures are git-ignored and go.
clean-artifacts:
	rm -rf artifacts data checkpoints
	git clean -fdqX plots
