# The two commands that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What running needs (almhookd and its dependencies), and on top of it the dev tools
# (pytest, ruff, mypy, Playwright…) for `make test`: `make run` installs only the first.
RUN_STAMP := $(VENV)/.run-installed
STAMP := $(VENV)/.installed

.PHONY: run test soak lint format bench bench-all bench-full bench-ingest bench-console mutation clean install uninstall

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The development configuration: made from config.dev.toml on the first `make run`, then
# left alone (edits to it survive; delete it to start again from the template).
DEV_CONFIG := var/almhookd.toml

$(DEV_CONFIG):
	mkdir -p var
	cp config.dev.toml $(DEV_CONFIG)

## run: the daemon on the development config var/almhookd.toml (database and token
## under ./var/, loopback webhook targets allowed)
run: $(RUN_STAMP) | $(DEV_CONFIG)
	$(BIN)/almhookd run --config $(DEV_CONFIG)

## test: lint, then every test
test: lint
	$(BIN)/pytest

## soak: the reliability suite's long variants (200 kills instead of 25); its figures
## go to var/reliability-soak.json (see RELIABILITY.md)
soak: $(STAMP)
	ALMHOOKD_SOAK=1 ALMHOOKD_RELIABILITY_REPORT=var/reliability-soak.json $(BIN)/pytest tests/reliability -v

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

BENCH_STAMP := $(VENV)/.bench-installed

# What bench/compare.py compares almhookd with: Celery, redis-py, requests, lazyhooks in
# the venv, and Debian's redis-server; Debian's wrk, the second load generator of
# bench/ingest.py and bench/ingest_wire.py (both installed with apt-get when missing, as root).
$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	command -v redis-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	command -v wrk >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	touch $(BENCH_STAMP)

## bench: almhookd side by side with Celery + Redis, lazyhooks and a plain aiohttp client
## (about 15 minutes); writes its section of BENCHMARKS.md
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.compare

## bench-all: the ingest and delivery benchmarks (about 12 minutes), then the comparison
bench-all: $(BENCH_STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python -m bench.ingest_wire
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.compare

## bench-full: the comparison at the issue's counts (20,000-event bursts, 3 runs of
## everything): about two hours on a 2-core machine
bench-full: $(BENCH_STAMP)
	$(BIN)/python -m bench.compare --full

## bench-ingest: issue 22's ingest figures, almhookd beside a bare aiohttp endpoint in the
## same run (single events, 500-event envelopes, p99 at 80% load; 3 runs, about 7 minutes)
bench-ingest: $(BENCH_STAMP)
	$(BIN)/python -m bench.ingest_wire

## bench-console: the console's pages timed with 5 webhooks and 100,000 retained
## deliveries (about a minute)
bench-console: $(STAMP)
	$(BIN)/python -m bench.console

MUTATION_STAMP := $(VENV)/.mutation-installed
# The pure modules, and of config.py only the duration functions (mutmut names a mutant
# module.x_function__mutmut_N; the [tool.mutmut] section of pyproject.toml picks the
# files and the unit tests that run against them).
MUTATION_TARGETS := 'almhookd.domain.backoff.*' 'almhookd.domain.policy.*' 'almhookd.domain.schedule.*' \
	'almhookd.domain.signing.*' 'almhookd.domain.targets.*' 'almhookd.domain.catalogue.*' 'almhookd.domain.events.*' \
	'almhookd.domain.webhooks.*' 'almhookd.domain.batching.*' 'almhookd.config.x_parse_duration__*' \
	'almhookd.config.x_format_duration__*' 'almhookd.config.x__duration__*'

$(MUTATION_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,mutation]'
	touch $(MUTATION_STAMP)

## mutation: mutation testing (mutmut) of the pure modules against their unit tests, about
## 2 minutes on 2 cores; lists the mutants no test killed (see docs/TESTING.md)
mutation: $(MUTATION_STAMP)
	rm -rf mutants
	$(BIN)/mutmut run $(MUTATION_TARGETS)
	$(BIN)/mutmut results | grep -v ': not checked$$' || true

clean:
	rm -rf $(VENV) var mutants .pytest_cache .mypy_cache .ruff_cache

## install: the package in a venv under $(PREFIX), the config under /etc/almhookd, the
## unit under /etc/systemd/system (see docs/INSTALL.md). Run as root. Idempotent: an
## existing config or credential is never overwritten, so it is also the upgrade. The venv
## is built afresh beside $(PREFIX) and swapped in once complete (a failed build leaves the
## old one), from a system Python (PYTHON=, default /usr/bin/python3: the unit's
## ProtectHome=yes hides interpreters under /root and /home, so tools/check_python.py
## refuses those). DESTDIR stages it all for packaging: no file mentions DESTDIR, scripts
## start with #!$(PREFIX)/bin/python, .pyc name $(PREFIX) and check the source's hash.
PREFIX ?= /opt/almhookd
DESTDIR ?=
# The admin token is made on the host only: a staged tree (DESTDIR, for a package or an
# image) would hand the same token to every host installed from it.
GENERATE_TOKEN ?= $(if $(DESTDIR),no,yes)
# Not the `python3` first on PATH that builds .venv for `make run`/`make test`: that is
# often a pyenv under /root. A PYTHON given on the command line or in the environment wins.
INSTALL_PYTHON := $(if $(filter command environment,$(firstword $(origin PYTHON))),$(PYTHON),/usr/bin/python3)
INSTALL_ROOT := $(abspath $(DESTDIR))
INSTALL_DIR := $(INSTALL_ROOT)$(abspath $(PREFIX))
INSTALL_NEW := $(INSTALL_DIR).new
INSTALL_UNIT := $(INSTALL_ROOT)/etc/systemd/system/almhookd.service
# Paths go into sed patterns and the unit unquoted: letters, digits and ._/+- only.
define install_check_paths
	@case '$(PREFIX)' in /*) ;; *) echo "make $@: PREFIX=$(PREFIX) must be an absolute path" >&2; exit 1;; esac
	@case '$(PREFIX)$(DESTDIR)' in *[!A-Za-z0-9._/+-]*) \
		echo "make $@: PREFIX and DESTDIR may hold only letters, digits and ._/+-" >&2; exit 1;; esac
	@if [ -e $(INSTALL_DIR) ] && [ ! -f $(INSTALL_DIR)/pyvenv.cfg ] && [ -n "$$(ls -A $(INSTALL_DIR))" ]; then \
		echo "make $@: $(INSTALL_DIR) holds something else than almhookd's venv: choose another PREFIX" >&2; exit 1; fi
endef

install:
	$(install_check_paths)
	@command -v $(INSTALL_PYTHON) >/dev/null || \
		{ echo "make install: PYTHON=$(INSTALL_PYTHON) not found; name a system Python 3.11+, e.g. PYTHON=/usr/bin/python3" >&2; exit 1; }
	@python=$$($(INSTALL_PYTHON) tools/check_python.py $(INSTALL_PYTHON)) && \
		echo "make install: the venv in $(INSTALL_NEW), from $$python" && \
		rm -rf $(INSTALL_NEW) && "$$python" -m venv $(INSTALL_NEW)
	src=$$(mktemp -d) && trap 'rm -rf "$$src"' EXIT && \
		cp -R pyproject.toml README.md almhookd "$$src"/ && \
		$(INSTALL_NEW)/bin/python -m pip install --quiet --disable-pip-version-check --no-compile "$$src"
	grep -rlF -- $(INSTALL_NEW) $(INSTALL_NEW)/bin $(INSTALL_NEW)/pyvenv.cfg | \
		xargs -r sed -i 's|$(subst .,\.,$(INSTALL_NEW))|$(abspath $(PREFIX))|g'
	find $(INSTALL_NEW) -name __pycache__ -type d -prune -exec rm -rf {} +
	$(INSTALL_NEW)/bin/python -m compileall -q -j 0 --invalidation-mode checked-hash \
		-d $(abspath $(PREFIX))/lib $(INSTALL_NEW)/lib >/dev/null
	install -d $(INSTALL_NEW)/share/doc
	install -m 0644 README.md docs/INSTALL.md $(INSTALL_NEW)/share/doc/
	# Readable and runnable by the service's dynamic user whatever root's umask was
	# (under umask 077, venv and pip make everything 0700/0600).
	chmod -R u=rwX,go=rX $(INSTALL_NEW)
	rm -rf $(INSTALL_DIR).old
	if [ -e $(INSTALL_DIR) ]; then mv $(INSTALL_DIR) $(INSTALL_DIR).old; fi
	mv $(INSTALL_NEW) $(INSTALL_DIR)
	rm -rf $(INSTALL_DIR).old
	install -d -m 0755 $(INSTALL_ROOT)/etc/almhookd
	install -d -m 0700 $(INSTALL_ROOT)/etc/almhookd/credentials
	test -e $(INSTALL_ROOT)/etc/almhookd/config.toml || \
		install -m 0644 config.example.toml $(INSTALL_ROOT)/etc/almhookd/config.toml
	@token=$(INSTALL_ROOT)/etc/almhookd/credentials/admin_token; \
	if [ -s $$token ]; then :; \
	elif [ "$(GENERATE_TOKEN)" = yes ]; then \
		(umask 077 && $(INSTALL_DIR)/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' > $$token.tmp) && \
		[ -s $$token.tmp ] && mv $$token.tmp $$token && echo "make install: generated the admin token in $$token"; \
	else \
		echo "make install: no admin token in a staged tree (every host would share it): create $${token#$(INSTALL_ROOT)} on the host (docs/INSTALL.md)"; \
	fi
	install -d -m 0755 $(dir $(INSTALL_UNIT))
	sed 's|/opt/almhookd|$(abspath $(PREFIX))|g' systemd/almhookd.service > $(INSTALL_UNIT).tmp
	chmod 0644 $(INSTALL_UNIT).tmp && mv $(INSTALL_UNIT).tmp $(INSTALL_UNIT)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; \
		if systemctl -q is-active almhookd; then echo "almhookd is running the old version: systemctl restart almhookd"; fi; \
	fi

## uninstall: the venv under $(PREFIX) and the unit; /etc/almhookd (config, credentials)
## and the database in /var/lib/almhookd stay (docs/INSTALL.md says how to remove them)
uninstall:
	$(install_check_paths)
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && [ -e $(INSTALL_UNIT) ]; then \
		systemctl disable --now almhookd.service; fi
	rm -f $(INSTALL_UNIT)
	rm -rf $(INSTALL_DIR) $(INSTALL_NEW) $(INSTALL_DIR).old
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
