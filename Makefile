# Machina: build, test and install.  `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
LIBEXECDIR ?= $(PREFIX)/libexec/machina
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR ?= $(PREFIX)/share/doc/machina
PIP_INSTALL_FLAGS ?=
PYTHON_BIN = $(shell command -v $(PYTHON))
DEBIAN_PACKAGES := bubblewrap libcap-dev libseccomp2 libseccomp-dev bats mandoc postgresql
PYTEST_ARGS ?=
MODEL_VENV ?= .venv-model

.PHONY: help setup setup-model deps venv bytecode test test-systemd lint bench install clean

help:
	@echo "make setup         install Debian packages (as root, when missing), create $(VENV), compile bytecode"
	@echo "make setup-model   optional: create $(MODEL_VENV) with the offline embedding model (torch CPU, ~1.5 GB)"
	@echo "make test          run the whole test suite (pytest, shell-level bats tests included)"
	@echo "make test-systemd  opt-in: run the units under a real systemd --user manager"
	@echo "make lint          ruff and mypy"
	@echo "make bench         run the benchmarks in bench/ and print figures"
	@echo "make install       install executables, units, man pages, machina.env (PREFIX, DESTDIR)"
	@echo "make clean         remove build outputs and $(VENV)"

setup: deps venv bytecode

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        echo "installing Debian packages:$$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	        echo "missing Debian packages:$$missing (run 'sudo make deps' or install them)" >&2; exit 1; \
	    fi; \
	fi

venv: $(VENV)/.installed

# The embedding model command (tools/embed/) runs in its own environment: torch stays out of the suite's.
setup-model: $(MODEL_VENV)/.installed

$(MODEL_VENV)/.installed: tools/embed/requirements.txt
	$(PYTHON) -m venv $(MODEL_VENV)
	$(MODEL_VENV)/bin/python -m pip install -q --upgrade pip
	$(MODEL_VENV)/bin/python -m pip install -q -r tools/embed/requirements.txt
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,mcp]'
	touch $@

# Job children and tool executors run with PYTHONDONTWRITEBYTECODE (they never write into the code), so a
# checkout compiles its bytecode here, as pip does for an install: without it every child that starts
# compiles Machina's modules from source again (a quarter of its start-up).
bytecode: venv
	$(PY) -m compileall -q machina

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Opt-in (root, cgroups): the units under a real `systemd --user` manager in a fresh cgroup and a private
# mount namespace (docs/spec/SYSTEMD-TESTING.md); never systemd as PID 1.
test-systemd: venv
	$(PY) -m pytest -p no:cacheprovider --run-systemd tests/systemd $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check machina tests bench scripts
	$(VENV)/bin/ruff format --check machina
	$(VENV)/bin/mypy

bench: venv bytecode
	$(PY) bench/run_all.py

# Install layout (PREFIX=/usr/local by default; DESTDIR stages it, as packagers do):
#   $(PREFIX)/bin/machina*                 executables (pip, into this Python's site-packages under PREFIX)
#   $(LIBEXECDIR)/*                        maintenance scripts the timers and cron run
#   $(UNITDIR)/*                           units, @BINDIR@ and @LIBEXECDIR@ substituted
#   $(SYSUSERSDIR)/machina.conf            the machina system user (run systemd-sysusers once)
#   $(MANDIR)/man{1,5,7,8}/*               man pages
#   $(SYSCONFDIR)/machina/machina.env      every variable commented out (never overwritten); holds no secret
#   $(SYSCONFDIR)/machina/secrets/         0700: UNIT.env with the secrets of one unit each (machina.env(5))
#   $(SYSCONFDIR)/machina/policies/        the policy driver's scripts (MACHINA_POLICY_ALLOWED_SCRIPT_ROOT)
#   $(SYSCONFDIR)/machina/mcp_servers.json no MCP servers (never overwritten)
#   $(DOCDIR)/machina.cron.example         the crontab alternative to the timers
# --ignore-installed: pip would otherwise uninstall this Python's own copy of machina (e.g. an editable one).
# PIP_INSTALL_FLAGS: e.g. "--no-build-isolation --no-index" to build offline with this Python's setuptools.
install:
	$(PYTHON) -m pip install --no-deps --ignore-installed $(PIP_INSTALL_FLAGS) --prefix=$(PREFIX) $(if $(DESTDIR),--root=$(DESTDIR)) .
	install -d $(DESTDIR)$(SYSCONFDIR)/machina $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR) \
	    $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR)
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/machina/secrets
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/machina/policies
	test -e $(DESTDIR)$(SYSCONFDIR)/machina/machina.env || \
	    install -m 0640 etc/machina/machina.env $(DESTDIR)$(SYSCONFDIR)/machina/machina.env
	test -e $(DESTDIR)$(SYSCONFDIR)/machina/mcp_servers.json || \
	    install -m 0640 etc/machina/mcp_servers.json $(DESTDIR)$(SYSCONFDIR)/machina/mcp_servers.json
	for f in systemd/*.service systemd/*.socket systemd/*.target systemd/*.timer; do \
	    sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' "$$f" \
	        > $(DESTDIR)$(UNITDIR)/$$(basename $$f) && chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$f); \
	done
	install -m 0644 sysusers.d/machina.conf $(DESTDIR)$(SYSUSERSDIR)/machina.conf
	install -m 0644 scripts/_bootstrap.py $(DESTDIR)$(LIBEXECDIR)/_bootstrap.py
	for f in scripts/*.py scripts/*.sh; do \
	    case "$$f" in scripts/_*|scripts/gen_*|scripts/quickstart.sh) continue;; esac; \
	    sed '1s|^#!/usr/bin/env python3$$|#!$(PYTHON_BIN)|' "$$f" > $(DESTDIR)$(LIBEXECDIR)/$$(basename $$f) && \
	    chmod 0755 $(DESTDIR)$(LIBEXECDIR)/$$(basename $$f); \
	done
	for page in man/*.[0-9]; do \
	    [ -e "$$page" ] || continue; \
	    sec=$${page##*.}; install -d $(DESTDIR)$(MANDIR)/man$$sec; \
	    install -m 0644 "$$page" $(DESTDIR)$(MANDIR)/man$$sec/; \
	done
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' etc/cron.d/machina.example > $(DESTDIR)$(DOCDIR)/machina.cron.example
	@if [ -z "$(DESTDIR)" ]; then \
	    echo "next: systemd-sysusers machina.conf && systemctl daemon-reload && systemctl enable --now machina.target"; \
	fi

clean:
	rm -rf $(VENV) $(MODEL_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
