# The README's commands: `make setup`, `make test`, `make app`.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages: chromium (browser tests), espeak-ng (speech the tests synthesize),
# postgresql (storage tests against a real server), ffmpeg is not needed (soundfile decodes).
APT_PACKAGES := chromium espeak-ng postgresql

# The suite runs on two processes (pytest-xdist); tests that start servers and browsers mostly wait.
PYTEST_WORKERS ?= 2

.PHONY: setup test test-fast app benchmark-encoders

setup:
	@if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	else echo "apt-get not found: install $(APT_PACKAGES) with your package manager" >&2; fi
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"

test:
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# The inner loop: no browser, no corpora, no servers (PostgreSQL, the app), nothing slow.
test-fast:
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow and not browser and not corpus and not postgres"

app:
	$(PY) app.py

benchmark-encoders:
	$(PY) benchmarks/encoders.py
