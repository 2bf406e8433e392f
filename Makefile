# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo serve test lint bench clean-var

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned: on these machines 2.13.0 is a CPU build on local disk, while a
	# looser requirement would pull a multi-GB CUDA build from the index.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python manage.py demo

serve: $(VENV)/.installed
	$(BIN)/python manage.py serve

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m bench.inflate
	$(BIN)/python -m bench.backends
	$(BIN)/python -m bench.pickup
	$(BIN)/python -m bench.ingest_burst
	$(BIN)/python -m bench.scheduler --all
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.s3_ingest --rate 30

clean-var:
	rm -rf var
