# logbridge: every entry point a user or CI needs.  `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: help deps venv proto test unit e2e lint demo status bench soak plugin install clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install the Debian packages the tests and the demo need (root)
	bash scripts/install-deps.sh

# setup.py builds driver/_speedups.c and the outputs' C modules (forward/_entries.c, loki/_encode.c,
# elasticsearch/_encode.c): an editable install compiles them in place
$(STAMP): pyproject.toml setup.py driver/_speedups.c driver/outputs/forward/_entries.c driver/outputs/loki/_encode.c \
		driver/outputs/elasticsearch/_encode.c driver/_logentry.h driver/_jsonescape.h
	python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## the project's virtualenv with runtime and test dependencies

proto/entry_pb2.py: proto/entry.proto | $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto proto/entry.proto

proto: proto/entry_pb2.py ## regenerate the protobuf module from proto/entry.proto

unit: venv ## unit tests only (no dockerd)
	$(PY) -m pytest -q tests/unit

test: deps venv ## the whole suite: unit tests and end-to-end tests on a private real dockerd
	@$(PY) -c 'import driver._speedups' || { echo "driver/_speedups.c did not build (gcc, python3-dev?)" >&2; exit 1; }
	$(PY) -m pytest -q tests

lint: venv
	$(VENV)/bin/ruff check driver tests

clean:
	rm -rf build dist *.egg-info .pytest_cache fuzz/build

# ---- fuzzing (issue 11.2; fuzz/README.md). Never part of `make test`, which runs only the smoke -------------
FUZZ_SECONDS ?= 1200
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?=
.PHONY: fuzz fuzz-smoke fuzz-merge

fuzz: deps venv ## atheris/libFuzzer on every target, C under ASan/UBSan: executions, coverage, findings per target; each stops at FUZZ_RUNS=1000000 or FUZZ_SECONDS=1200, FUZZ_TARGETS="frames jsonfile ..."
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) $(PY) -m fuzz.run $(FUZZ_TARGETS)

fuzz-smoke: deps venv ## a few seconds per fuzz target (tests/process/test_fuzz_smoke.py runs the same)
	$(PY) -m fuzz.run --smoke $(FUZZ_TARGETS)

fuzz-merge: venv ## keep in fuzz/corpus/ the inputs of the last fuzz run that add coverage (libFuzzer -merge=1)
	$(PY) -m fuzz.run --merge $(FUZZ_TARGETS)

# ---- the managed plugin: build, install, demo --------------------------------------------------------------
PLUGIN_NAME ?= logbridge
PLUGIN_DIR ?= build/plugin
PLUGIN_LOG_ROOT ?= /var/log/logbridge
PLUGIN_STATE_DIR ?= /var/lib/logbridge
LOG_LEVEL ?= info
# offline: Debian packages via mmdebstrap (plugin/build-rootfs.sh, cached); docker: plugin/Dockerfile FROM $(BASE)
PLUGIN_BUILDER ?= offline
BASE ?= python:3.11-slim-bookworm
DOCKER ?= docker

.PHONY: uninstall

plugin: ## build the managed plugin into build/plugin: config.json + rootfs (root; PLUGIN_BUILDER=docker BASE=...)
ifeq ($(PLUGIN_BUILDER),docker)
	bash plugin/build-rootfs.sh --wheel build/wheel
	DOCKER_BUILDKIT=0 $(DOCKER) build --network host --build-arg BASE=$(BASE) -f plugin/Dockerfile \
		-t logbridge-rootfs:build build/wheel
	rm -rf $(PLUGIN_DIR)/rootfs && mkdir -p $(PLUGIN_DIR)/rootfs
	cid=$$($(DOCKER) create --network none logbridge-rootfs:build /opt/logbridge/bin/python) && \
		{ $(DOCKER) export $$cid | tar -x -C $(PLUGIN_DIR)/rootfs; rc=$$?; $(DOCKER) rm $$cid >/dev/null; exit $$rc; }
else
	bash plugin/build-rootfs.sh $(PLUGIN_DIR)
endif
	cp config.json $(PLUGIN_DIR)/config.json
	@echo "plugin: $(PLUGIN_DIR) ($$(du -sh $(PLUGIN_DIR)/rootfs | cut -f1))"

install: ## docker plugin create + set + enable --timeout 0 from build/plugin (PLUGIN_NAME, PLUGIN_LOG_ROOT, PLUGIN_STATE_DIR)
	@test -f $(PLUGIN_DIR)/config.json -a -d $(PLUGIN_DIR)/rootfs || { echo "no $(PLUGIN_DIR): run make plugin" >&2; exit 1; }
	@if $(DOCKER) plugin inspect $(PLUGIN_NAME) >/dev/null 2>&1; then \
		echo "$(PLUGIN_NAME) is installed already: make uninstall first" >&2; exit 1; fi
	mkdir -p $(PLUGIN_LOG_ROOT) $(PLUGIN_STATE_DIR) /etc/logbridge
	echo $(PLUGIN_NAME) > $(PLUGIN_DIR)/rootfs/.docker-plugin-name
	$(DOCKER) plugin create $(PLUGIN_NAME) $(PLUGIN_DIR)
	$(DOCKER) plugin set $(PLUGIN_NAME) log-root.source=$(PLUGIN_LOG_ROOT) state-dir.source=$(PLUGIN_STATE_DIR) \
		LOG_LEVEL=$(LOG_LEVEL)
	$(DOCKER) plugin enable --timeout 0 $(PLUGIN_NAME) || { echo "the plugin's own output is in dockerd's log" \
		"(level=error ... plugin=<id>; journalctl -u docker on systemd)" >&2; exit 1; }

uninstall: ## disable and remove the plugin (FORCE=1 even while containers use it); logs and state stay
	@if ! $(DOCKER) plugin inspect $(PLUGIN_NAME) >/dev/null 2>&1; then echo "$(PLUGIN_NAME) is not installed"; exit 0; fi; \
	if [ "$$($(DOCKER) plugin inspect -f '{{.Enabled}}' $(PLUGIN_NAME))" = true ]; then \
		$(DOCKER) plugin disable $(if $(FORCE),-f) $(PLUGIN_NAME) || exit 1; fi; \
	$(DOCKER) plugin rm $(PLUGIN_NAME)

status: ## live figures per container from the running plugin (or its state files): PLUGIN_STATE_DIR=... (host python3)
	python3 -m driver status --state-dir $(PLUGIN_STATE_DIR)

demo: ## on a fresh Debian 12 as root: deps, a dockerd, the plugin, a container that logs, its json.log and docker logs
	bash plugin/demo.sh

# ---- benchmarks (never part of `make test`) -----------------------------------------------------------------
.PHONY: microbench report

bench: deps venv ## issue 5's benchmark on a private dockerd (root): json-file, none, logbridge, +forward, fluentd; BENCH_RUNS=7 BENCH_LINES=1000000 BENCH_CONCURRENT=1 BENCH_SCALE=10,100,1000 ... (see bench/run.py)
	$(if $(filter 1,$(BENCH_PYSPY)),$(PIP) install -q --disable-pip-version-check py-spy)
	$(PY) -m bench.run

report: venv ## bench/results/report.md and plots/*.png from bench/results/sweep.json (make bench BENCH_SWEEP=1) and latest.json
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench.report

microbench: venv ## the plugin's data path without dockerd, µs/line per stage; PROFILE=cprofile|pyinstrument MICROBENCH_ARGS="--workload short,100b,40kb"
	$(if $(filter pyinstrument,$(PROFILE)),$(PIP) install -q --disable-pip-version-check pyinstrument)
	$(PY) -m bench.microbench $(if $(PROFILE),--profile $(PROFILE)) $(MICROBENCH_ARGS)

# ---- soak (issue 11.7; bench/README.md): never part of `make test` ----------------------------------------------
.PHONY: soak

soak: deps venv ## 30 min of 50 containers on a private dockerd under restarts, plugin SIGKILLs, aggregator outages, rotation (root): fails on a lost or duplicated line or a PSS/fd leak; bench/results/soak.{csv,png,md}; SOAK_MINUTES=30 SOAK_CONTAINERS=50 ... (see bench/soak.py)
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PIP) install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench.soak

# ---- registry: push the built plugin, upgrade an installed one with running containers ----------------------------
PLUGIN_REF ?=
.PHONY: push upgrade

push: ## push build/plugin to a registry as PLUGIN_REF (e.g. PLUGIN_REF=localhost:5000/logbridge:1.1)
	@test -n "$(PLUGIN_REF)" || { echo "make push: set PLUGIN_REF=registry:port/name:tag" >&2; exit 2; }
	DOCKER=$(DOCKER) bash scripts/push.sh $(PLUGIN_DIR) $(PLUGIN_REF)

upgrade: ## upgrade the installed PLUGIN_NAME to PLUGIN_REF: disable -f, upgrade, check the architecture, enable --timeout 0
	@test -n "$(PLUGIN_REF)" || { echo "make upgrade: set PLUGIN_REF=registry:port/name:tag" >&2; exit 2; }
	DOCKER=$(DOCKER) bash scripts/upgrade.sh $(PLUGIN_NAME) $(PLUGIN_REF)
