# Bastion developer targets. Needs only python3.11 on PATH; everything else goes into .venv.
#
#   make venv         create/update .venv (quick when pyproject.toml and constraints.txt are unchanged);
#                     the install compiles the scanner's pickle emulator with mypyc (setup.py)
#   make mypyc        recompile it in place (`make test` does when its source is newer)
#   make test         ruff check, mypy, lint-imports, pytest (runs every step, fails if any failed)
#   make demo         build the demo project and assess it
#   make schemas      regenerate docs/*.schema.json from the pydantic models
#   make constraints  re-pin constraints.txt from the venv (pip freeze)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
# torch is installed first and on its own: pip's find-links on this machine hold the CPU build;
# resolving it together with the extras could pull the multi-GB CUDA build from an index.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?= -q

# The record of the compiled pickle emulator (setup.py writes it; bastion.scan._compiled reads it).
MYPYC_RECORD := src/bastion/scan/_mypyc.record
MYPYC_SOURCES := src/bastion/scan/pickle_vm.py src/bastion/scan/_compiled.py setup.py
EMULATOR_STATUS := import bastion.scan as s; print("bastion: pickle emulator:", s.pickle_vm_status())

.PHONY: venv mypyc test lint typecheck imports pytest demo schemas constraints clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q '$(TORCH)'
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,dev]'
	@$(BIN)/python -c '$(EMULATOR_STATUS)'
	@touch $(STAMP)

# An edited emulator runs as edited (pure Python) until this recompiles it; a failed compile
# records why and leaves it pure. Uses the venv's mypy (pinned by constraints.txt).
mypyc: venv
	$(BIN)/python setup.py -q build_ext --inplace
	@$(BIN)/python -c '$(EMULATOR_STATUS)'

$(MYPYC_RECORD): $(MYPYC_SOURCES) | $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace
	@$(BIN)/python -c '$(EMULATOR_STATUS)'

# Every step runs even when an earlier one fails, so one CI log shows every problem.
test: export OMP_NUM_THREADS = 1
test: export MKL_NUM_THREADS = 1
test: venv $(MYPYC_RECORD)
	@rc=0; \
	for step in "ruff check src tests benchmarks scripts setup.py" "mypy" "lint-imports" "pytest $(PYTEST_ARGS)"; do \
	  echo "==> $$step"; \
	  $(BIN)/$$step || { echo "FAILED: $$step"; rc=1; }; \
	done; \
	exit $$rc

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts setup.py

typecheck: venv
	$(BIN)/mypy

imports: venv
	$(BIN)/lint-imports

pytest: export OMP_NUM_THREADS = 1
pytest: export MKL_NUM_THREADS = 1
pytest: venv $(MYPYC_RECORD)
	$(BIN)/pytest $(PYTEST_ARGS)

demo: export OMP_NUM_THREADS = 1
demo: export MKL_NUM_THREADS = 1
demo: venv
	$(BIN)/bastion demo

schemas: venv
	$(BIN)/python scripts/gen_schemas.py

# The editable bastion itself is left out; torch is pinned without its local label (+cpu) so the
# same file works where the CPU build comes from find-links and where it comes from an index.
constraints: venv
	$(BIN)/python -m pip freeze --exclude-editable \
	  | grep -v -i -E '^(bastion-ml|bastion_ml)[ =@]' \
	  | sed -E 's/^torch==([^+]+)\+.*/torch==\1/' > constraints.txt.new
	mv constraints.txt.new constraints.txt
	@touch $(STAMP)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis build dist
