# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RADSERVE := $(VENV)/bin/radserve
STAMP := $(VENV)/.installed-stamp
BUILD := build
DEMO_CHECKPOINT := $(BUILD)/demo-resnet18.pt
DEMO_DICOM := $(BUILD)/demo-dicom
DEMO_EVAL := $(BUILD)/demo-eval
REPOSITORY := model_repository

.PHONY: demo test lint format install clean prometheus dicom3tools loadtest bench soak gpu-bundle

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[server,export,test,loadtest,clinical]"
	touch $(STAMP)

$(DEMO_CHECKPOINT): | $(STAMP)
	$(RADSERVE) -v train --output $@

# The demo model and its Grad-CAM companion demo_gradcam (radserve explain).
$(REPOSITORY)/demo/config.pbtxt: $(DEMO_CHECKPOINT)
	$(RADSERVE) export $(DEMO_CHECKPOINT) --name demo --repository $(REPOSITORY) --gradcam

$(REPOSITORY)/demo_gradcam/config.pbtxt: $(REPOSITORY)/demo/config.pbtxt
	@test -f $@ || $(RADSERVE) export $(DEMO_CHECKPOINT) --name demo --repository $(REPOSITORY) --gradcam

$(DEMO_DICOM)/manifest.csv: | $(STAMP)
	$(RADSERVE) synth $(DEMO_DICOM) --count 60 --seed 2026

# Held-out radiographs for the evaluation (other seed than the demo folder and the training set).
$(DEMO_EVAL)/manifest.csv: | $(STAMP)
	$(RADSERVE) synth $(DEMO_EVAL) --count 120 --seed 2027 --matrix 1024 832 --compressed-share 0

demo: $(REPOSITORY)/demo/config.pbtxt $(REPOSITORY)/demo_gradcam/config.pbtxt $(DEMO_DICOM)/manifest.csv $(DEMO_EVAL)/manifest.csv
	$(RADSERVE) demo $(DEMO_DICOM) --model demo --repository $(REPOSITORY) --output $(BUILD)/demo-results.jsonl
	$(RADSERVE) evaluate $(DEMO_EVAL) --model demo --truth $(DEMO_EVAL)/manifest.csv --out $(BUILD)/evaluation \
	  --serve-repository $(REPOSITORY)
	$(RADSERVE) explain $(DEMO_EVAL)/synthetic_00003.dcm --model demo --output $(BUILD)/demo-gradcam.png \
	  --serve-repository $(REPOSITORY)

# Prometheus and promtool for tests/test_prometheus.py: Debian's package, installed as root on a fresh
# machine (no service is started; the test starts its own on loopback). Without root it is skipped.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus is not installed and cannot be installed here: its tests will be skipped"; fi; }

# dicom3tools' dciodvfy for the SR conformance test (tests/test_sr.py): Debian's package, as above.
dicom3tools:
	@command -v dciodvfy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; \
	  else echo "dicom3tools is not installed and cannot be installed here: the SR conformance test will be skipped"; fi; }

# Locust smoke profile, headless, against the embedded server; prints the summary, exits 1 on failed thresholds.
loadtest: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(PY) -m radserve.loadtests.run --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) \
	  --load-profile smoke --out $(BUILD)/loadtest

# raw engine vs served vs naive baseline vs end-to-end from DICOM (table, JSON, PNG in build/bench).
bench: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(RADSERVE) bench --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) --out $(BUILD)/bench

# Offline GPU check (README, "GPU hosts"): build/gpu-bundle/ (<= 60 MB) with check.sh for a GPU host with
# Python 3.12 + PyTorch and no network. Downloads the Python 3.12 wheels once (build/gpu-bundle-cache).
gpu-bundle: | $(STAMP)
	$(PY) -m radserve.loadtests.gpu_bundle --out $(BUILD)/gpu-bundle --cache $(BUILD)/gpu-bundle-cache

# Soak (not in CI): SOAK_SECONDS of Locust against the embedded server, restarted twice; prints
# requests, failures and the RSS of server and client at start and end.
SOAK_SECONDS ?= 600
soak: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(PY) -m radserve.loadtests.soak --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) \
	  --seconds $(SOAK_SECONDS) --out $(BUILD)/soak

test: $(STAMP) prometheus dicom3tools
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(BUILD) $(REPOSITORY)/*/ .pytest_cache
