# The two set-up commands of the README (`make demo`, `make test`); each
# installs what it needs first. Everything goes into a project virtual
# environment, .venv, made with the system's python3: Debian 12 forbids pip
# installs into the system Python (PEP 668), and a venv keeps this project's
# dependencies away from everything else on the machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# proto/, signaling/ and peers/ install as these (setup.py)
PACKAGES := rtc_signal.proto rtc_signal.signaling rtc_signal.peers

.PHONY: install install-test demo test lint bench clean

# The stamp is written only once the venv has a working pip, so a venv that
# failed half-way (Debian without python3-venv) is made again next time.
$(VENV)/.created:
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: sudo apt-get install -y python3-venv" >&2; \
	  exit 1; }
	$(PY) -m pip install -q --upgrade pip
	@touch $@

# editable_mode=strict: the installed rtc_signal.* is a tree of links to the
# source files, which mypy follows (the default "lenient" editable install
# maps the names with an import hook that only the interpreter understands).
install: $(VENV)/.created
	$(PY) -m pip install -q -e . --config-settings editable_mode=strict

install-test: $(VENV)/.created
	$(PY) -m pip install -q -e ".[test]" --config-settings editable_mode=strict

demo: install
	$(PY) examples/local_demo.py

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check proto signaling peers examples benchmarks setup.py
	$(PY) -m mypy --strict $(addprefix -p ,$(PACKAGES))
	$(PY) -m mypy --strict examples
	$(PY) -m mypy --strict benchmarks

test: install-test lint
	$(PY) -m pytest -q

bench: install-test
	$(PY) benchmarks/relay.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/datachannel.py
	$(PY) benchmarks/startup.py

clean:
	rm -rf $(VENV) build *.egg-info
