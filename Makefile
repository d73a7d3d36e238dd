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
# A headless Chromium driven by puppeteer-core, for the plots page test (npm, pinned likewise).
BR_DIR := tests/tools/browser
BR_STAMP := $(BR_DIR)/node_modules/.installed
# The plots page: vega, vega-lite and vega-embed from npm (pinned by .dvc/plots-page/package-lock.json)
# inlined into the template .dvc/config names, so `dvc plots show` draws offline.
PLOTS_DIR := .dvc/plots-page
PLOTS_STAMP := $(PLOTS_DIR)/node_modules/.installed
PLOTS_PAGE := $(PLOTS_DIR)/template.html

.PHONY: .venv demo serve test lint bench clean-demo

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

$(BR_STAMP): $(BR_DIR)/package.json $(BR_DIR)/package-lock.json
	npm ci --prefix $(BR_DIR) --no-audit --no-fund --loglevel=error
	touch $(BR_STAMP)

$(PLOTS_STAMP): $(PLOTS_DIR)/package.json $(PLOTS_DIR)/package-lock.json
	npm ci --prefix $(PLOTS_DIR) --no-audit --no-fund --loglevel=error
	touch $(PLOTS_STAMP)

# Written again when npm installed anew or the generator changed (or it was deleted).
$(PLOTS_PAGE): $(PLOTS_STAMP) stages/pipeline/plots_page.py | $(STAMP)
	$(BIN)/python -m stages.pipeline.plots_page

# The environment alone (what a teammate needs before `dvc pull`).
.venv: $(STAMP) $(PLOTS_PAGE)

demo: $(STAMP) $(PLOTS_PAGE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m stages.demo

# The demo's stand-ins, from the state it left in .demo/, until Ctrl-C (for experiments).
serve: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m stages.demo serve

test: $(STAMP) $(DM_STAMP) $(AZ_STAMP) $(BR_STAMP) $(PLOTS_PAGE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check stages standins tests bench
	$(BIN)/ruff format --check stages standins tests bench

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/fetch.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/selection.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/dvc_transfer.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/frames.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/tator_frames.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/clean.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/import.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/gates.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/growth.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/noop.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/scale.py

# The demo's state; the input folders come back with `make demo` (or `dvc checkout`).
clean-demo:
	rm -rf .demo data/videodir/input data/figure8/input
