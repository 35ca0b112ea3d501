# `make run` and `make test` create the virtual environment on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv run test lint plan torch-cuda

# The PyTorch CUDA build for your driver, at requirements.txt's versions (docs/scaling.md: Installing for your GPU):
#   make torch-cuda TORCH_CUDA=cu126
TORCH_CUDA ?=
TORCH_INDEX ?= https://download.pytorch.org/whl
TORCH_VERSION := $(shell sed -n 's/^torch===//p' requirements.txt)
TORCHVISION_VERSION := $(shell sed -n 's/^torchvision===//p' requirements.txt)
TORCH_BUILD := torch==$(TORCH_VERSION)+$(TORCH_CUDA) torchvision==$(TORCHVISION_VERSION)+$(TORCH_CUDA)

venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/snakemake --cores all --resources gpu=1

test: $(STAMP)
	$(VENV)/bin/pytest

# What a config's grid costs before it runs (docs/scaling.md): make plan CONFIG="config/paper.yaml"
CONFIG ?=
plan: $(STAMP)
	PYTHONPATH=scripts $(VENV)/bin/python -m dpaat.cost $(if $(CONFIG),--configfile $(CONFIG))

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check workflow/Snakefile rules/

torch-cuda: $(STAMP)
	@test -n "$(TORCH_CUDA)" || { echo "set TORCH_CUDA to the build for your driver, e.g. make torch-cuda TORCH_CUDA=cu126 (docs/scaling.md: Installing for your GPU)" >&2; exit 2; }
	$(VENV)/bin/pip install --force-reinstall --no-deps --index-url $(TORCH_INDEX)/$(TORCH_CUDA) $(TORCH_BUILD)
	$(VENV)/bin/pip install --extra-index-url $(TORCH_INDEX)/$(TORCH_CUDA) $(TORCH_BUILD)
	$(VENV)/bin/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU usable:', torch.cuda.is_available())"
