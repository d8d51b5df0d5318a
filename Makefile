# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RADSERVE := $(VENV)/bin/radserve
STAMP := $(VENV)/.installed-stamp
BUILD := build
DEMO_CHECKPOINT := $(BUILD)/demo-resnet18.pt
DEMO_DICOM := $(BUILD)/demo-dicom
REPOSITORY := model_repository

.PHONY: demo test lint format install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[server,export,test]"
	touch $(STAMP)

$(DEMO_CHECKPOINT): | $(STAMP)
	$(RADSERVE) -v train --output $@

$(REPOSITORY)/demo/config.pbtxt: $(DEMO_CHECKPOINT)
	$(RADSERVE) export $(DEMO_CHECKPOINT) --name demo --repository $(REPOSITORY)

$(DEMO_DICOM)/manifest.csv: | $(STAMP)
	$(RADSERVE) synth $(DEMO_DICOM) --count 60 --seed 2026

demo: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(RADSERVE) demo $(DEMO_DICOM) --model demo --repository $(REPOSITORY) --output $(BUILD)/demo-results.jsonl

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(BUILD) $(REPOSITORY)/*/ .pytest_cache
