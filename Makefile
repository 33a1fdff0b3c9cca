# The two commands of the README: `make demo` and `make test`. Both build a project-local virtual
# environment first (.venv), so a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned so CPU machines take the CPU build; change it for a CUDA machine.
TORCH_SPEC ?= torch==2.13.0
# The service's ONNX Runtime: `serve` (onnxruntime, CPU) or `serve-gpu` (onnxruntime-gpu, CUDA).
SERVE_EXTRA ?= serve
DEMO_DIR ?= artifacts/demo
# `make demo DEMO_FLAGS=--exit-after-request` stops after the example request.
DEMO_FLAGS ?=
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: demo test lint typecheck unit venv clean

venv: $(VENV)/.installed $(VENV)/.kernels

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	@# the two builds install the same module: never both (a switch of SERVE_EXTRA replaces one)
	$(BIN)/python -m pip uninstall --quiet --yes onnxruntime onnxruntime-gpu 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e ".[$(SERVE_EXTRA),train,dev]"
	touch $@

# The compiled request-path loops (service/_kernels.c) are built in place by the editable
# install: a change to their source rebuilds them without reinstalling the rest.
$(VENV)/.kernels: $(VENV)/.installed setup.py service/_kernels.c
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(BIN)/ranker data generate --size tiny --seed 0 --out $(DEMO_DIR)/world
	$(BIN)/ranker data encode $(DEMO_DIR)/world --cache $(DEMO_DIR)/encodings
	$(BIN)/ranker train --config training/configs/prectr_tiny.toml --data $(DEMO_DIR)/world --out $(DEMO_DIR)/prectr
	$(BIN)/ranker train elec --config training/configs/elec_tiny.toml --data $(DEMO_DIR)/world --out $(DEMO_DIR)/elec
	rm -rf $(DEMO_DIR)/packages $(DEMO_DIR)/snapshot
	$(BIN)/ranker export onnx $(DEMO_DIR)/prectr --out $(DEMO_DIR)/packages --version demo
	$(BIN)/ranker export onnx $(DEMO_DIR)/elec --out $(DEMO_DIR)/packages --version demo
	$(BIN)/ranker export snapshot --run $(DEMO_DIR)/prectr --out $(DEMO_DIR)/snapshot
	$(BIN)/ranker demo --packages $(DEMO_DIR)/packages --snapshot $(DEMO_DIR)/snapshot $(DEMO_FLAGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy deploy/stack_check.py deploy/docker/requirements.py

unit: venv
	$(BIN)/python -m pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) artifacts .mypy_cache .ruff_cache .pytest_cache build service/*.so
