# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Datumaro, the dataset tool the VOC/COCO export tests read with, in its own venv: it pins
# other pillow/pyarrow versions than the project.
DM_VENV := .venv-datumaro
DM_STAMP := $(DM_VENV)/.installed
# Azurite, the Azure Storage emulator the Azure Blob tests run (npm, pinned by its lockfile).
AZ_DIR := tests/tools/azurite
AZ_STAMP := $(AZ_DIR)/node_modules/.installed

.PHONY: demo test lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(DM_STAMP): Makefile tests/tools/datumaro-constraints.txt
	test -x $(DM_VENV)/bin/python || $(PYTHON) -m venv $(DM_VENV)
	$(DM_VENV)/bin/pip install --quiet --disable-pip-version-check datumaro==1.13.12 \
		-c tests/tools/datumaro-constraints.txt
	touch $(DM_STAMP)

$(AZ_STAMP): $(AZ_DIR)/package.json $(AZ_DIR)/package-lock.json
	npm ci --prefix $(AZ_DIR) --no-audit --no-fund --loglevel=error
	touch $(AZ_STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m stages.demo

test: $(STAMP) $(DM_STAMP) $(AZ_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check stages standins tests bench
	$(BIN)/ruff format --check stages standins tests bench

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/fetch.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/select.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/dvc_transfer.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/frames.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/tator_frames.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/clean.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/import.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/gates.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/growth.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/noop.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/scale.py

clean-demo:
	rm -rf .demo data/videodir/input data/figure8/input
