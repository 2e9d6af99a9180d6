# stiv_jax: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on first use and install everything they need into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat setup.cfg Makefile | cksum | cut -d' ' -f1)
CORE := $(VENV)/.core-$(HASH)
STAMP := $(VENV)/.installed-$(HASH)
export JAX_PLATFORMS ?= cpu
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_WORKERS ?= 2

.PHONY: venv test test-slow lint format demo demo-apps bench clean

# The demo needs only the core dependencies and the I3D weights of its FVD (no PyTorch/TensorFlow/
# libtpu): a quicker first run.
$(CORE): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[eval]"
	rm -f $(VENV)/.core-* && touch $@

# Tests, converters and TPU AOT checks need every extra.
$(STAMP): $(CORE)
	# CPU PyTorch first (a local wheel where the machine has one), so the torch extra adds nothing heavy.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test,torch,tpu,tf]"
	# Reference implementations for the evaluation tests (tests/reference_packages.py), outside site-packages
	# and without their dependencies (torchvision and timm would replace the CPU PyTorch):
	# open_clip's CLIP tokenizer, torch-fidelity's FID InceptionV3, scikit-image's SSIM.
	$(BIN)/pip install -q --no-deps --upgrade --target $(VENV)/references "open_clip_torch==3.3.0" "torch-fidelity==0.4.0" "scikit-image==0.26.0" "lazy_loader==0.6"
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# ruff (configured in pyproject.toml): lint and check the formatting; `make format` fixes both.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The 25 slowest tests are listed at the end: the default suite should stay under ~25 minutes on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q --durations=25 tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

demo: $(CORE)
	$(BIN)/python -m stiv_jax.apps.demo --out=outputs/demo $(DEMO_ARGS)

# The paper's applications (docs/applications.md), trained from the `make demo` run.
demo-apps: $(CORE)
	$(BIN)/python -m stiv_jax.apps.demo_apps --demo=outputs/demo --out=outputs/demo-apps $(DEMO_APPS_ARGS)

bench: $(STAMP)
	$(BIN)/stiv-bench all

clean:
	rm -rf outputs build *.egg-info
