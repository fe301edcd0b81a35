# whisper-triton: every command a user or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/whisper-triton
# CPU build of PyTorch (installed from local disk on the project's machines). For a GPU machine:
#   make setup TORCH_SPEC="torch==2.13.0"  with pip's CUDA wheel index configured, see docs/deployment.md.
TORCH_SPEC ?= torch==2.13.0
APT_PACKAGES := espeak-ng ffmpeg sox
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# perf_analyzer links libb64.so.0d; the Triton Python stub embeds the system's libpython of our version.
APT_LIBRARIES := libb64-0d libpython$(PYTHON_VERSION)
LOCK := requirements/dev.lock
MODEL_REPOSITORY ?= model_repository

.PHONY: help setup system-deps lock test soak lint demo build-repo bench bench-streaming bench-features perf serve clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: system-deps ## create .venv with every dependency, and convert the bundled tiny.en weights
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	# Every other package at the version $(LOCK) pins (all extras), then this project itself.
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	# tritonserver (CPU, Python backend) ships in this wheel; --no-deps: we use only its binaries, and
	# its own pins (numpy<2, ...) are already met by the lock.
	$(PY) -m pip install -q --no-deps "nvidia-pytriton==0.7.0"
	$(PY) -c "from training.modeling import bundled_tiny_en_dir; print('tiny.en ready at', bundled_tiny_en_dir())"
	$(CLI) runtime
	$(CLI) perf --install

lock: ## regenerate $(LOCK) from pyproject.toml (all extras; torch is installed from TORCH_SPEC instead)
	echo "torch==2.13.0+cpu" > $(VENV)/torch-override.txt  # resolve torch's CPU build: no CUDA packages
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version $(PYTHON_VERSION) \
		--python-platform x86_64-manylinux_2_28 --find-links /opt/wheels --override $(VENV)/torch-override.txt \
		--no-emit-package torch --no-header --annotation-style line -o $(LOCK)

system-deps: ## Debian packages for speech synthesis, audio decoding and perf_analyzer (skipped when present)
	@missing=$$(for p in $(APT_PACKAGES); do command -v $$p >/dev/null || echo $$p; done; \
		for p in $(APT_LIBRARIES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "please install: $$missing (e.g. sudo apt-get install $$missing)"; exit 1; fi; \
	fi

test: ## the whole test suite (CI runs exactly this after make setup); ends with its 20 slowest tests
	$(PY) -m pytest -q --durations=20

soak: ## the bounded load test for 5 minutes instead of 15 s (concurrency 8, 10% bad requests, memory growth)
	WHISPER_TRITON_SOAK_SECONDS=300 $(PY) -m pytest -q -s tests/test_reliability.py -k bounded_load

lint: ## ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: ## build tiny.en into model_repository/, start tritonserver, transcribe sample speech over gRPC
	$(PY) scripts/demo.py

build-repo: ## whisper-triton build with the defaults (tiny.en, python runtime, fp32) into model_repository/
	$(CLI) build --output $(MODEL_REPOSITORY)

bench: ## this server (fp32/int8, concurrency 1/2/4) vs faster-whisper vs transformers: table + JSON
	$(PY) scripts/bench_serving.py

bench-streaming: ## streaming: final WER vs offline, commit latency, concurrent real-time streams (int8): tables + JSON
	$(PY) scripts/bench_streaming.py

perf: ## Triton's perf_analyzer against the whisper ensemble (int8 tiny.en, concurrency 1/2/4): table + JSON
	$(PY) scripts/perf.py

bench-features: ## log-mel extraction: ours vs transformers' WhisperFeatureExtractor
	$(PY) scripts/bench_features.py

serve: ## run tritonserver (CPU, from nvidia-pytriton) for MODEL_REPOSITORY on 127.0.0.1:8000-8002 until Ctrl-C
	$(CLI) serve --model-repository $(MODEL_REPOSITORY)

clean:
	rm -rf .cache artifacts .pytest_cache
