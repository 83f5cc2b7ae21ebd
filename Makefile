# Two commands a newcomer needs: `make demo` and `make test`. Both set up what is
# missing first (uv, the virtualenv with the bundle installed, Java for Spark, ...) and
# are safe to run again. `make check` is the fast loop: lint, types, import contracts, unit tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# uv from PATH if there is one, else a private copy installed from PyPI.
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
# The stamp names the hash of the lock and the project, so editing either re-syncs the venv.
LOCK_HASH := $(shell cat uv.lock pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.synced-$(LOCK_HASH)
# Bytecode compiled at install: this machine sets PYTHONDONTWRITEBYTECODE=1, and
# without .pyc files every task process would recompile Airflow (2.7 s vs 1.2 s).
export UV_COMPILE_BYTECODE := 1
# ...and the project's own modules and pytest's rewritten tests cached too (an empty value
# lets Python write .pyc files): collecting the suite took 9.0 s recompiling them, 6.0 s cached.
export PYTHONDONTWRITEBYTECODE :=
# Debian package → the command it provides; installed only when the command is missing.
# openjdk: Spark's JVM. docker-registry: the CNCF distribution registry, devstack's ECR.
# chromium: the browser the UI test drives through Playwright (playwright cannot download one here).
# podman + runc: devstack's Lambda runs the released image as a container (devstack/containers/README.md);
# debootstrap: the local Lambda base image's Debian root file system; curl: the demo's and README's
# function URL call (--aws-sigv4); iproute2: the local cluster's running pods put their IPs on lo
# (devstack/kube/pods.py). The base also needs Go >= 1.26.6 for AWS's RIE (Go module proxy).
APT_NEEDS := openjdk-17-jre-headless:java docker-registry:docker-registry chromium:chromium \
	podman:podman runc:runc debootstrap:debootstrap curl:curl skopeo:skopeo iproute2:ip
AIRFLOW_PORT ?= 8080
# wrk: the HTTP load generator, needed by make bench only.
BENCH_APT_NEEDS := wrk:wrk

.PHONY: help setup kube lambda-base demo test test-airflow-3.0 check bench up down lock wheel wheelhouse mwaa clean sysdeps jars

help:
	@echo "make demo   run the pipeline end to end on devstack (local Spark, moto, SQLite Airflow)"
	@echo "make test   the whole test suite"
	@echo "make check  lint, types, import contracts and unit tests (under a minute)"
	@echo "make test-airflow-3.0  the three DAGs end to end with the DAG runs on MWAA's Airflow 3.0.6 (the oldest supported)"
	@echo "make wheel  the bundle's wheel in dist/; make mwaa: build/mwaa/{dags/,plugins.zip,requirements.txt,startup.sh}"
	@echo "make astro  an Astro project in build/astro/ (Dockerfile, requirements.txt, include/<wheel>, dags/, .env)"
	@echo "make bench  benchmarks (features at scale, batch scoring, DAG parse, serving, release, demo) -> BENCHMARKS.md"
	@echo "make up / make down   start / stop devstack + Airflow standalone (UI on :8080, admin/admin) + the local Kubernetes"
	@echo "make kube   build the local Kubernetes control plane from Go modules (once per version; needs Go >= 1.26)"
	@echo "make lambda-base  build the local Lambda base image (debootstrap + awslambdaric + AWS's RIE; once, ~2 min)"
	@echo "make lock   re-resolve uv.lock from pyproject.toml (and the EMR nodes' hash-locked requirements)"
	@echo "make wheelhouse LAKE=<bucket>  deploy step: stage the EMR nodes' wheels in the lake"

setup: sysdeps $(STAMP) jars

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

# The dev environment: uv.lock exactly (every group, the EMR nodes' included, and the http extra),
# with the bundle itself installed editable, so every tool imports the packages by name.
$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --quiet --frozen --all-extras --all-groups --python $(PYTHON)
	@rm -f $(VENV)/.synced-* && touch $@

# $(call apt_ensure,package:command ...): apt-get install the packages whose command is missing.
define apt_ensure
missing=""; for need in $(1); do \
	  command -v $${need#*:} >/dev/null || missing="$$missing $${need%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
endef

sysdeps:
	@$(call apt_ensure,$(APT_NEEDS))

# The S3A jars local Spark reads s3:// with (Maven Central, sha256-pinned, cached per machine).
jars: $(STAMP)
	@$(PY) -m devstack.spark_local jars >/dev/null

# uv.lock, and the EMR nodes' hash-locked requirements exported from its emr-node group.
NODE_REQUIREMENTS := spark_jobs/bank_spark/bootstrap/requirements.txt
lock: | $(UV)
	$(UV) lock
	{ sed -n '/^#/p' $(NODE_REQUIREMENTS); $(UV) export --frozen --only-group emr-node --no-emit-project \
	  --no-header --no-annotate --format requirements-txt; } > $(NODE_REQUIREMENTS).new
	mv $(NODE_REQUIREMENTS).new $(NODE_REQUIREMENTS)

# Deploy step: the EMR nodes' wheels for both architectures, hash-checked, into the lake
# (LAKE=<bucket>; AWS credentials from the environment). Once per deployment and lock change.
wheelhouse: setup
	@test -n "$(LAKE)" || { echo "usage: make wheelhouse LAKE=<lake bucket>"; exit 2; }
	$(PY) -m bank_pipeline.wheelhouse --bucket $(LAKE)

# Lint, format, complexity (C901), types, the import contracts (serving <- ml | jobs <- pipeline <- dags), unit tests
# (tests/unit: tests/conftest.py keeps every unit-marked test there, and collecting it alone is faster than -m unit).
# Only the virtualenv: no Debian package, jar or Go build is needed for the fast loop.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests/unit -q -n 2

wheel: setup
	rm -rf dist && $(UV) build --wheel --out-dir dist

# The MWAA shape: plugins.zip holds the wheel and the plugin registration; requirements.txt
# names the wheel where MWAA unpacks plugins.zip, plus the runtime requirements (no -c line:
# MWAA adds Airflow's constraints); startup.sh exports the BANK_* settings.
mwaa: wheel
	$(PY) -m devstack.deploy mwaa --wheel dist/*.whl --out build/mwaa

# The Astro project: the Runtime image's ONBUILD installs requirements.txt, the Dockerfile the wheel.
.PHONY: astro
astro: wheel
	$(PY) -m devstack.deploy astro --wheel dist/*.whl --out build/astro

# The local Kubernetes control plane (kube-apiserver, controller manager, scheduler, etcd, kwok)
# built from Go modules into ~/.cache/bank-ml/kube/<version>/bin: once per version (minutes, at
# the lowest priority), then a check that takes milliseconds. devstack/kube/README.md.
kube:
	nice -n 19 devstack/kube/build.sh

# The local Lambda base image (devstack/containers/lambda_image.py) in the project's podman store: built
# once at the lowest priority (a couple of minutes), then a content-hash check that takes
# a fraction of a second. devstack runs the released serving image on it.
lambda-base: setup
	nice -n 19 $(PY) -m devstack.containers.lambda_image build --quiet

demo: setup kube lambda-base
	$(PY) -m devstack.harness.demo

# Both cores: each test module runs whole on one worker, and so do the tests sharing the e2e Airflow,
# the Spark job's bank-full run or the `make up` stack (tests/conftest.py, SHARED_GROUPS). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup kube lambda-base
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The oldest Airflow supported, as MWAA 3.0.6 installs the bundle: its image's packages under its
# constraint files in a venv cached under ~/.cache/bank-ml/mwaa (devstack/harness/mwaa_env.py; rebuilt when
# they, uv.lock, pyproject.toml or requirements.txt change, else only the bundle is reinstalled).
# The end-to-end runs of the three DAGs then run their DAG-run children and metadata DB on it
# (BANK_AIRFLOW_PYTHON); devstack, Spark and the tests stay on the dev venv.
E2E_DAG_TESTS := tests/e2e/devstack/harness/test_airflow_env.py tests/e2e/dags/test_bank_features_emr.py \
	tests/e2e/dags/test_bank_model_release.py tests/e2e/dags/test_bank_batch_score.py
test-airflow-3.0: setup kube lambda-base
	airflow_python=$$($(PY) -m devstack.harness.mwaa_env venv 3.0.6) && \
	BANK_AIRFLOW_PYTHON=$$airflow_python $(PY) -m pytest $(E2E_DAG_TESTS)

# Figures, not pass/fail: JSON, plots and report.md under build/bench/, and the
# figures section of BENCHMARKS.md (with its plots in docs/bench/) replaced.
# About 17 minutes on 2 cores (measured); the 1000x features data (4.6 GB) is generated once
# into build/bench/data. Run it on a quiet machine: the figures are wall times.
bench: setup
	@$(call apt_ensure,$(BENCH_APT_NEEDS))
	$(PY) -m bench.features_bench
	$(PY) -m bench.train_bench
	$(PY) -m bench.scoring_bench
	$(PY) -m bench.drift_bench
	$(PY) -m bench.parse_bench
	$(PY) -m bench.serving_bench
	$(PY) -m bench.http_bench
	$(PY) -m bench.serving_image_bench
	$(PY) -m bench.http_bench --container
	$(PY) -m bench.lambda_invoke_bench
	$(PY) -m bench.release_bench
	$(PY) -m bench.canary_rollback_bench
	$(PY) -m bench.demo_bench
	$(PY) -m bench.report --update BENCHMARKS.md

up: setup kube lambda-base
	$(PY) -m devstack.harness.stack up --port $(AIRFLOW_PORT)

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack.harness.stack down; $(PY) -m devstack down; $(PY) -m devstack.kube down; fi

clean: down
	rm -rf build .pytest_cache
