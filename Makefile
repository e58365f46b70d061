# yolo-jobs: `make run` starts the whole stack, `make test` runs the suite.
# Both install what they need from nothing. The services come from Debian's packages
# postgresql, rabbitmq-server and redis-server (`make services` starts any that is down).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What each target installs (setup.cfg's extras, an install per role). Running the stack takes the API's, a CPU
# worker's and the operators' (under 1 GB: no PyTorch, the worker runs the bundled model's OpenVINO export, kept in
# models/); the tests, the benchmarks and make model take everything, PyTorch and Ultralytics with it.
RUN_EXTRAS := api,worker-cpu,ops
ALL_EXTRAS := api,worker-gpu,ops,test,training
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
export YOLO_OFFLINE ?= 1
export YOLO_CONFIG_DIR ?= $(CURDIR)/var/ultralytics
export LOG_FORMAT ?= text
CHROMIUM := /usr/bin/chromium
# For what installs everything (install, test, model, bench; `make run` takes no torch). Empty: torch comes from PyPI
# with its CUDA wheels (about 5 GB). PyTorch's CPU index (https://download.pytorch.org/whl/cpu) installs a CPU-only
# torch first instead (docs/operations.md: What the install costs).
TORCH_INDEX_URL ?=
NGINX := /usr/sbin/nginx

# Each process's command, written once: its make target runs it, and `make run` starts them all.
# gunicorn on API_BIND (127.0.0.1:8001) behind nginx on PROXY_BIND (127.0.0.1:8000): proxy/nginx.conf.in says why.
API_CMD := $(BIN)/gunicorn -c python:gunicorn_config "app:create_app()"
PROXY_CMD := $(BIN)/python -m proxy
# One local worker serves every queue; OpenShift runs webhooks (no GPU) in a worker of their own.
# Run as root, Celery warns that the worker has superuser privileges. On a developer's machine that is the
# developer's choice for every process (nginx's workers run as root there too), so the local worker ignores that
# one warning (Python's filter on the module that raises it); the image runs as a non-root user, where it stays.
WORKER_CMD := PYTHONWARNINGS=ignore::UserWarning:celery.platforms $(BIN)/celery -A tasks worker -Q inference,maintenance,webhooks -E --loglevel INFO
BEAT_CMD := $(BIN)/celery -A tasks beat --loglevel INFO --schedule var/celerybeat-schedule
# Flower can terminate tasks and shut workers down: local only, behind basic auth (var/flower_auth). Its task
# list shows each task's result: a running job's progress, "25/100 images" (tasks/reporting.py).
FLOWER_CMD := FLOWER_BASIC_AUTH="$$(cat var/flower_auth)" $(BIN)/celery -A tasks flower --address=127.0.0.1 --port=5555 --tasks_columns=name,uuid,state,result,received,runtime,worker

# The bundled model's OpenVINO export, the fastest CPU backend (bench/backends.py), is kept in the repository beside
# the .pt: CPU workers run it with no PyTorch installed (inference/backends.py). make model rebuilds it.
BUNDLED_WEIGHTS := models/shapes-yolov8n.pt

.PHONY: install run api proxy worker beat flower db services test test-browser bench model lint audit format clean

install: $(STAMP)

TRACKERS_VERSION = 2.6.1

# What running needs; everything else is installed on top of it, so `make run` after `make test` installs nothing.
# --no-compile: Python compiles a module when a process first imports it; compiled at install, every module of
# every package (SciPy's, Matplotlib's, OpenVINO's) took 120 MB that no process of `make run` reads.
$(RUN_STAMP): setup.cfg pyproject.toml yolo_jobs_client/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e ".[$(RUN_EXTRAS)]"
	@# Video tracks (video/tracks.py); --no-deps: setup.cfg says why.
	$(BIN)/pip install --quiet --no-compile --no-deps "trackers==$(TRACKERS_VERSION)"
	@# The client is a distribution of its own (yolo_jobs_client/pyproject.toml): it brings the yolo-jobs command.
	$(BIN)/pip install --quiet --no-compile -e ./yolo_jobs_client
	mkdir -p var/ultralytics
	touch $@

$(STAMP): $(RUN_STAMP)
	$(if $(TORCH_INDEX_URL),$(BIN)/pip install --quiet --index-url $(TORCH_INDEX_URL) torch torchvision)
	$(BIN)/pip install --quiet -e ".[$(ALL_EXTRAS)]"
	touch $@

services:
	@bash scripts/ensure-services.sh

db: $(RUN_STAMP) services
	$(BIN)/python -m storage.maintenance schema

var/flower_auth:
	@mkdir -p var
	@umask 077 && $(BIN)/python -c "import secrets; print('admin:' + secrets.token_urlsafe(18))" > $@

run: db var/flower_auth $(NGINX)
	@# Flower starts once the worker answers (scripts/await_worker.py says why).
	@printf '%s\n' 'api: $(API_CMD)' 'proxy: $(PROXY_CMD)' 'worker: $(WORKER_CMD)' 'beat: $(BEAT_CMD)' 'flower: $(BIN)/python -m scripts.await_worker; $(FLOWER_CMD)' > var/Procfile
	@echo "API     http://127.0.0.1:8000/  (JSON under /api/v1; sign in at http://127.0.0.1:8000/sign-in)"
	@echo "        admin API key (var/admin_key): $$($(BIN)/flask --app app keys local-admin)"
	@echo "Flower  http://127.0.0.1:5555/  user:password $$(cat var/flower_auth)"
	@echo "Ctrl-C stops everything."
	@# honcho exits 130 after Ctrl-C (143 after SIGTERM) once it has stopped everything: that is a clean stop, not an error.
	$(BIN)/honcho -f var/Procfile -d $(CURDIR) start || { status=$$?; [ $$status -eq 130 ] || [ $$status -eq 143 ] || exit $$status; }

api: db
	$(API_CMD)

proxy: $(RUN_STAMP) $(NGINX)
	$(PROXY_CMD)

worker: db
	$(WORKER_CMD)

beat: $(RUN_STAMP)
	$(BEAT_CMD)

flower: $(RUN_STAMP) var/flower_auth
	$(FLOWER_CMD)

$(CHROMIUM):
	command -v apt-get >/dev/null || { echo "install Debian's chromium package"; exit 1; }
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

$(NGINX):
	command -v apt-get >/dev/null || { echo "install Debian's nginx package"; exit 1; }
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx

# The modules run on TEST_PROCESSES pytest-xdist processes at once (a module stays on one: its fixtures are shared),
# each with services, gunicorn and worker of its own; then the tests marked `alone`, with nothing beside them.
# pytest exits 5 when PYTEST_ARGS leaves no test of a part to run.
TEST_PROCESSES ?= 2
test: install services $(CHROMIUM) $(NGINX)
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile -m "not alone" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-browser: install services $(CHROMIUM)
	$(BIN)/pytest -m browser $(PYTEST_ARGS)

bench: install services
	$(BIN)/python -m bench

# Every stage of training/train.py's STAGES, in order (its docstring says what each adds); the model card,
# models/shapes-yolov8n.md, gives seeds, times and how to measure the result. Then the OpenVINO export the CPU
# workers run, recording the digest of the weights it was made from (tests/unit/inference/test_bundled_export.py).
model: install
	$(BIN)/python -m training.train
	$(BIN)/python -m inference.export $(BUNDLED_WEIGHTS)
	$(BIN)/python -m evaluation

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

# pip-audit over the installed packages; fails when its service could not check them (scripts/audit.py).
# Not part of `make test`: it needs PyPI's JSON API, or OSV with AUDIT_ARGS='-s osv'.
audit: install
	$(BIN)/python -m scripts.audit $(AUDIT_ARGS)

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var test-artifacts models/*.onnx
