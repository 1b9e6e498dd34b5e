# logbridge: every entry point a user or CI needs.  `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: help deps venv proto test unit e2e lint demo bench plugin install clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install the Debian packages the tests and the demo need (root)
	bash scripts/install-deps.sh

$(STAMP): pyproject.toml
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
	$(PY) -m pytest -q tests

lint: venv
	$(VENV)/bin/ruff check driver tests

clean:
	rm -rf build dist *.egg-info .pytest_cache
