# Every target sets up (or refreshes) its own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/outreach demo

test: $(STAMP)
	$(BIN)/ruff check outreach tests bench tools
	$(BIN)/python -m pytest

bench: $(STAMP)
	@command -v sqlite3 >/dev/null || (apt-get update -qq && apt-get install -y -qq sqlite3)
	@command -v smtp-sink >/dev/null || test -x /usr/sbin/smtp-sink || (apt-get update -qq && \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix; rm -f /usr/sbin/policy-rc.d)
	$(BIN)/python bench/render.py
	$(BIN)/python bench/import_contacts.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/plan.py

clean:
	rm -rf $(VENV) .outreach .pytest_cache .hypothesis
