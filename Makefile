# The two commands in the README: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps demo test lint unit integration bench clean

deps:
	@./.ci/install-deps

demo: deps
	$(PY) -m tests.testbed.demo

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy backupd
	$(VENV)/bin/mypy bench tests

test: lint
	$(VENV)/bin/pytest -q

unit: deps
	$(VENV)/bin/pytest -q tests/unit

integration: deps
	$(VENV)/bin/pytest -q -m integration

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
