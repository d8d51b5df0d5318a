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

.PHONY: demo test lint format install clean prometheus dicom3tools loadtest bench

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[server,export,test,loadtest]"
	touch $(STAMP)

$(DEMO_CHECKPOINT): | $(STAMP)
	$(RADSERVE) -v train --output $@

$(REPOSITORY)/demo/config.pbtxt: $(DEMO_CHECKPOINT)
	$(RADSERVE) export $(DEMO_CHECKPOINT) --name demo --repository $(REPOSITORY)

$(DEMO_DICOM)/manifest.csv: | $(STAMP)
	$(RADSERVE) synth $(DEMO_DICOM) --count 60 --seed 2026

demo: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(RADSERVE) demo $(DEMO_DICOM) --model demo --repository $(REPOSITORY) --output $(BUILD)/demo-results.jsonl

# Prometheus and promtool for tests/test_prometheus.py: Debian's package, installed as root on a fresh
# machine (no service is started; the test starts its own on loopback). Without root it is skipped.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus is not installed and cannot be installed here: its tests will be skipped"; fi; }

# dciodvfy (dicom3tools) validates the DICOM SR documents in tests; skipped where it cannot be installed.
dicom3tools:
	@command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; \
	  else echo "dicom3tools is not installed and cannot be installed here: dciodvfy checks will be skipped"; fi; }

# Locust smoke profile, headless, against the embedded server; prints the summary, exits 1 on failed thresholds.
loadtest: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(PY) -m radserve.loadtests.run --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) \
	  --load-profile smoke --out $(BUILD)/loadtest

# raw engine vs served vs naive baseline vs end-to-end from DICOM (table, JSON, PNG in build/bench).
bench: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(RADSERVE) bench --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) --out $(BUILD)/bench

test: $(STAMP) prometheus dicom3tools
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(BUILD) $(REPOSITORY)/*/ .pytest_cache
