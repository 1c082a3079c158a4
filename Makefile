# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint venv browser clean

# torch goes first and alone: any other torch spec would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium checks that report pages render; the tests that need it skip without it.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
		echo "note: chromium not installed (needs root); the report page rendering tests will skip"

run: $(STAMP)
	$(BIN)/python -m raygan.tune tune_configs/default.yaml

# ruff (configured in pyproject.toml) keeps the style: `ruff format .` and `ruff check --fix .` apply it.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) browser lint
	$(BIN)/python -m pytest tests

test-fast: $(STAMP) lint
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info
