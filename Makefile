# The two commands of the README: `make demo` and `make test`; `make docs` builds the site. Each creates .venv when needed.
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

.PHONY: demo test docs lint format install clean debian-tools prometheus dcmtk client-venv typecheck loadtest bench bench-docs bench-peers bench-tune bench-systems bench-engines demo-systems soak soak-listen gpu-bundle

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	mkdir -p $(BUILD)  # the editable install writes radserve.egg-info here; tests/_client_venv.py's takes the lock too
	flock $(BUILD)/.editable-install.lock $(PY) -m pip install --quiet --no-compile -c requirements/constraints.txt -e ".[server,export,test,loadtest,clinical,docs]"
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

# Debian tools the tests drive, installed as root on a fresh machine (no service is started: each test
# starts its own on loopback). Without root their tests are skipped. $(1): COMMAND:PACKAGE entries; the
# missing packages are installed by one apt-get (one index update for all of them).
define debian_tools
	@missing=""; for entry in $(1); do \
	  command -v $${entry%%:*} >/dev/null 2>&1 || missing="$$missing $${entry##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "$$missing: not installed and cannot be installed here: their tests will be skipped"; fi; fi
endef

# Prometheus and promtool (tests/test_prometheus.py), dcmtk's storescu, echoscu and storescp
# (tests/test_listen.py), nginx in front of replicas (tests/test_nginx.py, started with a temporary prefix,
# never the service), dicom3tools' dciodvfy (the SR conformance test, tests/test_sr.py).
DEBIAN_TOOLS := prometheus:prometheus storescu:dcmtk nginx:nginx dciodvfy:dicom3tools
debian-tools:
	$(call debian_tools,$(DEBIAN_TOOLS))

prometheus:
	$(call debian_tools,prometheus:prometheus)

dcmtk:
	$(call debian_tools,storescu:dcmtk)

# Locust smoke profile, headless, against the embedded server; prints the summary, exits 1 on failed thresholds.
loadtest: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(RADSERVE) loadtest --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) \
	  --load-profile smoke --out $(BUILD)/loadtest

# raw engine vs served vs naive baseline vs end-to-end from DICOM (table, JSON, PNG in build/bench).
bench: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(RADSERVE) bench --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) --out $(BUILD)/bench

# Offline GPU check (docs/how-to/gpu-hosts.md): build/gpu-bundle/ (<= 60 MB) with check.sh for a GPU host with
# Python 3.12 + PyTorch and no network. Downloads the Python 3.12 wheels once (build/gpu-bundle-cache).
gpu-bundle: | $(STAMP)
	$(PY) -m radserve.loadtests.gpu_bundle --out $(BUILD)/gpu-bundle --cache $(BUILD)/gpu-bundle-cache

# Soak (not in CI): SOAK_SECONDS of Locust against the embedded server, restarted twice; prints
# requests, failures and the RSS of server and client at start and end.
SOAK_SECONDS ?= 600
soak: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv
	$(PY) -m radserve.loadtests.soak --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) \
	  --seconds $(SOAK_SECONDS) --out $(BUILD)/soak

# Listener soak (not in CI): SOAK_SECONDS of storescu sending fresh instances to `radserve listen` while
# Triton is restarted twice; prints instances acknowledged = rows, instances/s and the listener's RSS.
soak-listen: $(REPOSITORY)/demo/config.pbtxt $(DEMO_DICOM)/manifest.csv dcmtk
	$(PY) -m radserve.loadtests.soak_listen --model demo --repository $(REPOSITORY) --dicom $(DEMO_DICOM) \
	  --seconds $(SOAK_SECONDS) --out $(BUILD)/soak-listen


# docs/bench/ (the site's measurements/bench page is generated from it), on a QUIET machine (~20 min on 2 cores): ResNet-18 (demo
# weights) fp32 + INT8, EfficientNet-B0 and MobileNetV3-Small (random weights), 120 uncompressed
# realistic-size DICOM files; every point 3 runs of 3 s; served and naive at 1, 4, 16 requests in
# flight of 1 and 8 radiographs. `make bench-tune` (~15 min) writes docs/bench/tune-resnet18.json.
BENCH_ARGS := --concurrency 1 4 16 --batches 1 8 16 32 --seconds 3
BENCH_REPOSITORY := $(BUILD)/bench-repository
BENCH_DICOM := $(BUILD)/bench-dicom
BENCH_MODELS := resnet18:resnet18-224-fp32 resnet18_int8:resnet18-224-int8 \
  efficientnet_b0:efficientnet_b0-224-fp32 mobilenet_v3_small:mobilenet_v3_small-224-fp32
bench-docs: $(DEMO_CHECKPOINT)
	rm -rf $(BENCH_REPOSITORY) $(BENCH_DICOM)
	$(RADSERVE) synth $(BENCH_DICOM) --count 120 --seed 2026 --compressed-share 0
	$(RADSERVE) export $(DEMO_CHECKPOINT) --name resnet18 --repository $(BENCH_REPOSITORY) --precision fp32 int8
	for arch in efficientnet_b0 mobilenet_v3_small; do \
	  $(PY) -m radserve.loadtests.random_checkpoint $$arch $(BUILD)/$$arch.pt && \
	  $(RADSERVE) export $(BUILD)/$$arch.pt --name $$arch --repository $(BENCH_REPOSITORY) --min-top1 0 \
	    || exit 1; done  # random weights: near-uniform probabilities, top-1 is noise (max abs diff still gated)
	for entry in $(BENCH_MODELS); do model=$${entry%%:*}; file=$${entry##*:}; \
	  $(RADSERVE) bench --model $$model --repository $(BENCH_REPOSITORY) --dicom $(BENCH_DICOM) $(BENCH_ARGS) \
	    --out $(BUILD)/bench/$$model && cp $(BUILD)/bench/$$model/bench.json docs/bench/$$file.json && \
	  cp $(BUILD)/bench/$$model/bench.png docs/bench/$$file.png || exit 1; done
	$(PY) -m radserve.loadtests.tables \
	  --bench $(foreach entry,$(BENCH_MODELS),docs/bench/$(lastword $(subst :, ,$(entry))).json)

# radserve against MLServer, KServe, Ray Serve, LitServe and BentoML on the bench models (not in CI; ~40 min on a
# QUIET machine, after `make bench-docs` made the repository): each peer is installed into its own venv under
# build/peers first (it needs the package index), then the comparison runs in a loopback-only network namespace
# (unshare --net, as root), because several peers bind every interface. docs/bench/peers/MODEL.json.
# 4 and 16 in flight (one request in flight leaves a batcher nothing to batch); raw batches 1, 8, 16 (the engine's
# best here is at 8 or 16): ~10 min per model.
PEERS_ARGS := --concurrency 4 16 --images-per-request 1 8 --batches 1 8 16 --seconds 2 --repeats 3
bench-peers: | $(STAMP)
	test -d $(BENCH_REPOSITORY)/resnet18 || { echo "run make bench-docs first"; exit 1; }
	$(PY) -m radserve.loadtests.peers --environments $(BUILD)/peers
	mkdir -p docs/bench/peers
	for entry in $(BENCH_MODELS); do model=$${entry%%:*}; file=$${entry##*:}; \
	  unshare --net sh -c "ip link set lo up && $(RADSERVE) bench --model $$model --repository $(BENCH_REPOSITORY) \
	    --dicom $(BENCH_DICOM) --peers --peer-environments $(BUILD)/peers $(PEERS_ARGS) --out $(BUILD)/peers-$$model" \
	  && cp $(BUILD)/peers-$$model/peers.json docs/bench/peers/$$file.json || exit 1; done

bench-tune: | $(STAMP)
	test -d $(BENCH_REPOSITORY)/resnet18 || { echo "run make bench-docs first"; exit 1; }
	$(RADSERVE) tune resnet18 --repository $(BENCH_REPOSITORY) --concurrency 16 --out docs/bench/tune-resnet18.json
	$(PY) -m radserve.loadtests.tables --tune docs/bench/tune-resnet18.json

# The five systems at their study input sizes (random-init study architectures, served with each
# system's contract): docs/bench/system-NAME.json, the site's systems table (~12 min on 2 cores:
# EfficientNet-B6 at 528 px runs at a few radiographs per second here, so few configurations).
SYSTEMS := spine-view spondylolisthesis body-region vertebral-fracture-mri fracture
bench-systems: | $(STAMP)
	for system in $(SYSTEMS); do \
	  $(RADSERVE) bench --system $$system --batches 1 4 --concurrency 2 4 --images-per-request 1 --seconds 2 \
	    --out $(BUILD)/bench/system-$$system && \
	  cp $(BUILD)/bench/system-$$system/bench.json docs/bench/system-$$system.json || exit 1; done
	$(PY) -m radserve.loadtests.tables --systems $(foreach s,$(SYSTEMS),docs/bench/system-$(s).json)

# The CPU engines (ONNX Runtime, OpenVINO fp32/bf16, INT8 on both) of every system's architecture at its
# study size and of the bench models, random-init, gated against PyTorch: docs/bench/engines/ARCH-SIZE.json,
# the benchmark page's engine table (~50 min on 2 cores; not in CI).
bench-engines: | $(STAMP)
	$(PY) -m radserve.loadtests.engine_sweep --out docs/bench/engines

# Each system's demo trained here from scratch (the plans in radserve/export/train.py), exported with the
# system's contract (parity gate), served by the real tritonserver next to the fracture detector, and
# scored by `radserve evaluate` on 100 held-out synthetic inputs of another seed; the reports and
# evaluations are copied to docs/systems/ (about 40 min on 2 cores, most of it EfficientNet training).
DEMO_SYSTEMS := $(BUILD)/systems
demo-systems: | $(STAMP)
	for system in $(SYSTEMS); do \
	  $(RADSERVE) -v train --system $$system --output $(DEMO_SYSTEMS)/$$system.pt && \
	  $(RADSERVE) export $(DEMO_SYSTEMS)/$$system.pt --system $$system --repository $(DEMO_SYSTEMS)/repository && \
	  $(RADSERVE) synth $(DEMO_SYSTEMS)/$$system-held-out --system $$system --count 100 --seed 7 || exit 1; done
	$(RADSERVE) -v train --system fracture --detector --output $(DEMO_SYSTEMS)/fracture_detector.pt
	$(RADSERVE) export $(DEMO_SYSTEMS)/fracture_detector.pt --system fracture --repository $(DEMO_SYSTEMS)/repository
	mkdir -p docs/systems
	for system in $(SYSTEMS); do \
	  $(RADSERVE) evaluate $(DEMO_SYSTEMS)/$$system-held-out --model $$system \
	    --truth $(DEMO_SYSTEMS)/$$system-held-out/manifest.csv --serve-repository $(DEMO_SYSTEMS)/repository \
	    --out $(DEMO_SYSTEMS)/$$system-evaluation && \
	  cp $(DEMO_SYSTEMS)/$$system.report.json docs/systems/$$system-training.json && \
	  cp $(DEMO_SYSTEMS)/$$system-evaluation/evaluation.json docs/systems/$$system-evaluation.json || exit 1; done
	cp $(DEMO_SYSTEMS)/fracture_detector.report.json docs/systems/fracture_detector-training.json
	# Grad-CAM of a held-out degenerative spondylolisthesis (file 2: labels cycle in the contract's order)
	$(RADSERVE) explain $(DEMO_SYSTEMS)/spondylolisthesis-held-out/spondylolisthesis_00002.dcm \
	  --model spondylolisthesis --serve-repository $(DEMO_SYSTEMS)/repository \
	  --output docs/systems/spondylolisthesis-gradcam.png

# The documentation site (MkDocs + Material) in build/site/; strict: a warning or a broken link fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The client-only environment of tests/test_client_install.py (`pip install radserve` beside numpy 2):
# ~85 s to build on 2 cores, so built here once, beside the project's venv (the system Python runs the
# builder: pip installs on one core); rebuilt when pyproject.toml changes.
CLIENT_VENV := $(BUILD)/client-venv
client-venv:
	$(PYTHON) tests/_client_venv.py $(CLIENT_VENV)

# mypy over the installed namespace: build/typecheck/radserve links radserve/'s files and each folder
# under its package name (pyproject.toml's package-dir), as an installed wheel lays them out.
TYPECHECK := $(BUILD)/typecheck/radserve
typecheck: | $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	for entry in radserve/*; do ln -s $(CURDIR)/$$entry $(TYPECHECK)/; done
	for folder in client export server_config loadtests synthetic clinical; do \
	  ln -s $(CURDIR)/$$folder $(TYPECHECK)/$$folder; done
	$(PY) -m mypy -p radserve

# The environments and the Debian tools are made side by side (each pip and apt-get runs on one core), then
# ruff, the site and mypy side by side, before the suite: a broken page fails in seconds. The suite runs in
# TEST_WORKERS pytest-xdist processes, a test file per process at a time (its module fixtures built once):
# most tests wait on a server, a child process or a timeout, so two share the two cores well.
TEST_WORKERS ?= 2
test:
	$(MAKE) --no-print-directory -j3 install debian-tools client-venv
	$(MAKE) --no-print-directory -j3 lint docs typecheck
	$(PY) -m pytest --numprocesses $(TEST_WORKERS) --dist loadfile

lint: | $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(BUILD) $(REPOSITORY)/*/ .pytest_cache
