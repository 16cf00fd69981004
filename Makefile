# The README's commands. Each installs what is missing first and is safe to run again.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
INVOKE := $(VENV)/bin/invoke
PYTHON ?= python3

.PHONY: demo test bench bench-quick lint deps system-deps

demo: deps
	$(INVOKE) sandbox.up
	$(INVOKE) drill --host sandbox

# Two workers (pytest-xdist), each with a sandbox fleet of its own (tests/integration/helpers.py):
# the suite mostly waits on hosts, so two halve its time on two cores. A file stays on one worker.
test: deps
	$(VENV)/bin/ruff check ripcord sandbox tests bench tasks.py checks
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

# Each regenerates docs/performance.md's measured section from what it measured (bench/report.py).
bench: deps
	$(PY) bench/run.py --hosts 10 50
	$(PY) bench/halt.py --hosts 10
	$(PY) bench/halt.py --hosts 50 --runs 5

# The 10-host jobs alone (touch + read against plain Fabric, pyinfra, Ansible; ripcord verify; halt).
bench-quick: deps
	$(PY) bench/run.py --hosts 10
	$(PY) bench/halt.py --hosts 10 --runs 5

lint: deps
	$(VENV)/bin/ruff check ripcord sandbox tests bench tasks.py checks

# Bytecode compiled ahead, as an install does: where PYTHONDONTWRITEBYTECODE is set, every run
# would otherwise compile ripcord from source again (~0.3 s of a halt). Stale files recompile.
deps: system-deps $(VENV)/.installed
	$(PY) -m compileall -q ripcord checks sandbox tasks.py

# The venv, with ripcord editable and the test and bench extras; rebuilt when pyproject changes.
# editable_mode=compat: a plain path entry; setuptools' default import finder costs ~20 ms a run.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test,bench]'
	touch $@

# Debian packages the sandbox fleet runs, installed only when their binaries are missing.
system-deps:
	@missing=""; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v ssh >/dev/null || missing="$$missing openssh-client"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v psql >/dev/null || missing="$$missing postgresql-client"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	test -x /usr/bin/python3 && /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3 python3-venv"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v keyctl >/dev/null || missing="$$missing keyutils"; \
	command -v sudo >/dev/null || missing="$$missing sudo"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root, or install them yourself:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
