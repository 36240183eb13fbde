# Every target sets up (or refreshes) its own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# The package's bytecode, compiled ahead (when PYTHONDONTWRITEBYTECODE is set, every
# command would otherwise compile it again at start-up).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q outreach

demo: bytecode
	$(BIN)/outreach demo

test: bytecode
	$(BIN)/ruff check outreach tests bench tools
	$(BIN)/python -m pytest

bench: bytecode
	@command -v sqlite3 >/dev/null || (apt-get update -qq && apt-get install -y -qq sqlite3)
	@command -v smtp-sink >/dev/null || test -x /usr/sbin/smtp-sink || (apt-get update -qq && \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix; rm -f /usr/sbin/policy-rc.d)
	$(BIN)/python bench/render.py
	$(BIN)/python bench/import_contacts.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/log_export.py
	$(BIN)/python bench/bounces.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) .outreach .pytest_cache .hypothesis
