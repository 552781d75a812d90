# The two commands: `make run` (embedded default, no services needed) and `make test`
# (the whole suite against real PostgreSQL, Redis and RabbitMQ).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1

# The services the tests (and `make run-stack` unless overridden) talk to.
TEST_ENV := DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/chat} \
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
	CELERY_BROKER_URL=$${TEST_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//}
# `make run` is the embedded default whatever the shell exports.
EMBEDDED_ENV := env -u DATABASE_URL -u REDIS_URL -u REDIS_SHARD_URLS -u CELERY_BROKER_URL -u AWS_STORAGE_BUCKET_NAME

.PHONY: run run-stack run-cluster test lint typecheck superuser migrate bench bench-full clean help

help:
	@echo "make run        serve on http://$(HOST):$(PORT) with the embedded default (no services needed)"
	@echo "make test       install test needs, check services, run ruff, mypy and the whole suite"
	@echo "make run-stack  web + Celery worker + beat (Procfile) against the services in the environment"
	@echo "make run-cluster  nginx on PORT in front of one web process per core (WEB_PROCESSES), worker, beat"
	@echo "make superuser  create an admin account for /admin/"
	@echo "make bench      the quick benchmark suite (bench-full: everything); see docs/performance.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(EMBEDDED_ENV) DJANGO_DEBUG=1 $(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "  Chat is running on http://$(HOST):$(PORT)/"
	@echo "  Sign up in the browser at http://$(HOST):$(PORT)/signup/"
	@echo "  For the admin at /admin/, run 'make superuser' in another terminal."
	@echo ""
	$(EMBEDDED_ENV) DJANGO_DEBUG=1 HOST=$(HOST) PORT=$(PORT) VENV_BIN=$(BIN) bash scripts/serve.sh

superuser: $(VENV)/.installed
	$(EMBEDDED_ENV) $(BIN)/python manage.py createsuperuser

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput

run-stack: $(VENV)/.installed
	$(BIN)/python manage.py check_services
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	PORT=$(PORT) HOST=$(HOST) $(BIN)/honcho start

# nginx (Debian's package, installed when missing) balancing several web processes, plus the
# Procfile's worker and beat: scripts/run_cluster.sh, docs/operations.md "Topology".
run-cluster: $(VENV)/.installed
	PORT=$(PORT) HOST=$(HOST) VENV_BIN=$(BIN) bash scripts/run_cluster.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy .

test: $(VENV)/.installed-dev
	bash scripts/ensure_services.sh
	bash scripts/ensure_packages.sh
	$(MAKE) --no-print-directory lint typecheck
	$(TEST_ENV) $(BIN)/pytest -n $${PYTEST_WORKERS:-2} $(PYTEST_ARGS)

# BENCH_ARGS: e.g. "--only W4", "--layout cluster", "--only W7 --soak-seconds 60 --soak-rate 50"
# (python -m bench.run --help). nginx fronts the web processes in the cluster runs.
bench: $(VENV)/.installed-dev
	bash scripts/ensure_services.sh
	bash scripts/ensure_packages.sh nginx
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-full: $(VENV)/.installed-dev
	bash scripts/ensure_services.sh
	bash scripts/ensure_packages.sh nginx
	$(BIN)/python -m bench.run --full $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
