# Two commands on a fresh clone: `make train` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build: a plain `pip install torch` pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup train test tensorboard lint format clean

setup: $(STAMP)

# Reuse a torch the base interpreter already has (via system site-packages);
# otherwise install the pinned CPU build before anything can pull another one.
$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "Using the torch already installed for $(PYTHON)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

train: setup
	$(VENV)/bin/rnnlab-train $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir logs

lint: setup
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

format: setup
	$(PY) -m ruff format src tests scripts
	$(PY) -m ruff check --fix src tests scripts

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
