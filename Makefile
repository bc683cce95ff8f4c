# The two commands that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What running needs (almhookd and its dependencies), and on top of it the dev tools
# (pytest, ruff, mypy, Playwright…) for `make test`: `make run` installs only the first.
RUN_STAMP := $(VENV)/.run-installed
STAMP := $(VENV)/.installed

.PHONY: run test soak lint format bench bench-all bench-full bench-console mutation clean install

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the daemon on config.example.toml with its database under ./var/
run: $(RUN_STAMP)
	$(BIN)/almhookd run --config config.example.toml --database var/almhookd.db

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
# the venv, and Debian's redis-server (installed with apt-get when missing, as root).
$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	command -v redis-server >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	touch $(BENCH_STAMP)

## bench: almhookd side by side with Celery + Redis, lazyhooks and a plain aiohttp client
## (about 15 minutes); writes its section of BENCHMARKS.md
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.compare

## bench-all: the ingest and delivery benchmarks (about 5 minutes), then the comparison
bench-all: $(BENCH_STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.compare

## bench-full: the comparison at the issue's counts (20,000-event bursts, 3 runs of
## everything): about two hours on a 2-core machine
bench-full: $(BENCH_STAMP)
	$(BIN)/python -m bench.compare --full

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
## existing config or credential is never overwritten, so it is also the upgrade.
PREFIX ?= /opt/almhookd
DESTDIR ?=
install:
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/pip install --quiet --upgrade pip
	$(DESTDIR)$(PREFIX)/bin/pip install --quiet --upgrade .
	install -d -m 0755 $(DESTDIR)/etc/almhookd
	install -d -m 0700 $(DESTDIR)/etc/almhookd/credentials
	test -e $(DESTDIR)/etc/almhookd/config.toml || \
		install -m 0644 config.example.toml $(DESTDIR)/etc/almhookd/config.toml
	test -e $(DESTDIR)/etc/almhookd/credentials/admin_token || \
		(umask 077; $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' \
			> $(DESTDIR)/etc/almhookd/credentials/admin_token)
	install -d $(DESTDIR)$(PREFIX)/share/doc
	install -m 0644 README.md docs/INSTALL.md $(DESTDIR)$(PREFIX)/share/doc/
	install -D -m 0644 systemd/almhookd.service $(DESTDIR)/etc/systemd/system/almhookd.service
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
