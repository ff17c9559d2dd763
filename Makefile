# Two commands on a fresh clone: `make train` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build: a plain `pip install torch` pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup train test tensorboard lint format clean

setup: $(STAMP)

# A torch that $(PYTHON) already imports (system, venv or conda) is kept: a .pth file
# puts its site-packages after the venv's own. Otherwise the pinned CPU build goes in
# before anything else can pull another one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@site=$$($(PYTHON) -c "import pathlib, torch; print(pathlib.Path(torch.__file__).parents[1])" 2>/dev/null) \
	  && echo "Keeping the torch installed in $$site" \
	  && echo "$$site" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/existing_torch.pth" \
	  || true
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,optuna,launchers,export]"  # the extras too: their tests run
	@touch $(STAMP)

train: setup
	$(VENV)/bin/rnnlab-train $(ARGS)

# Two pytest workers (pytest-xdist), each given whole files so that a file's module fixtures
# are built once; TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir logs

lint: setup
	$(PY) -m ruff check src tests scripts
	$(PY) -m ruff format --check src tests scripts

format: setup
	$(PY) -m ruff format src tests scripts
	$(PY) -m ruff check --fix src tests scripts

# Runs in logs/ are results, not build output: `make clean` keeps them.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
