# yolo-jobs: `make run` starts the whole stack, `make test` runs the suite.
# Both install what they need from nothing. The services come from Debian's packages
# postgresql, rabbitmq-server and redis-server (`make services` starts any that is down).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export YOLO_OFFLINE ?= 1
export YOLO_CONFIG_DIR ?= $(CURDIR)/var/ultralytics
export LOG_FORMAT ?= text
CHROMIUM := /usr/bin/chromium

.PHONY: install run api worker beat flower db services test test-browser bench model lint format clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[worker,ops,test]"
	mkdir -p var/ultralytics
	touch $(STAMP)

services:
	@bash scripts/ensure-services.sh

db: install services
	$(BIN)/python -m storage.schema

run: db
	@echo "API     http://127.0.0.1:8000/  (JSON under /api/v1)"
	@echo "Flower  http://127.0.0.1:5555/"
	@echo "Ctrl-C stops everything."
	$(BIN)/honcho -f Procfile start

api: db
	$(BIN)/gunicorn -c gunicorn.conf.py "app:create_app()"

worker: db
	$(BIN)/celery -A tasks worker -Q inference,maintenance -E --loglevel INFO

beat: install
	$(BIN)/celery -A tasks beat --loglevel INFO --schedule var/celerybeat-schedule

flower: install
	$(BIN)/celery -A tasks flower --port=5555

$(CHROMIUM):
	command -v apt-get >/dev/null || { echo "install Debian's chromium package"; exit 1; }
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

test: install services $(CHROMIUM)
	$(BIN)/pytest $(PYTEST_ARGS)

test-browser: install services $(CHROMIUM)
	$(BIN)/pytest -m browser $(PYTEST_ARGS)

bench: install services
	$(BIN)/python -m bench

model: install
	$(BIN)/python -m training.train

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var test-artifacts
