# The two set-up commands of the README; each installs what it needs first.
PYTHON ?= python3

.PHONY: install demo test lint bench

install:
	$(PYTHON) -m pip install -q -e ".[test]"

demo: install
	$(PYTHON) examples/local_demo.py

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check proto signaling peers examples
	$(PYTHON) -m mypy --strict proto signaling peers examples

test: install lint
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/relay.py
	$(PYTHON) benchmarks/memory.py
	$(PYTHON) benchmarks/datachannel.py
