# Mailstead: the developer and demo entry points. GNU make on Debian; every target is
# idempotent. `make run` starts a demo server, `make test` runs everything the CI runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MAILSTEAD := $(PY) -m mailstead
DEMO := demo-data
STAMP := $(VENV)/.installed
# swaks needs the Perl TLS and SASL modules for STARTTLS and AUTH.
# chromium and chromium-driver run the end-to-end browser test (tests/integration/test_web_browser.py).
# postfix and dovecot: check-client is tested against them too (tests/integration/
# test_check_client_postfix.py runs them as root on loopback ports, with its own config).
# postgresql: the store suites and the integration tests run against PostgreSQL too; only its
# binaries are used (tests/pgserver.py starts a private throw-away cluster on loopback, as the
# postgres user when root), never the system's own cluster.
TEST_DEBS := swaks isync openssl fetchmail libio-socket-ssl-perl libnet-ssleay-perl libauthen-sasl-perl \
	postfix dovecot-imapd dovecot-pop3d \
	chromium chromium-driver \
	rspamd clamav-daemon \
	postgresql
# pytest-xdist workers for the integration tests of `make test`: they mostly wait on servers
# and sockets, so more workers than cores pay off. On 2 cores (564 tests, both backends):
# 3 workers 6m17, 4 workers 5m07, 6 workers 4m54; 4 leaves headroom for timing-sensitive tests.
TEST_WORKERS ?= 4

.PHONY: help venv run test test-deps lint docs bench clean distclean

help:
	@echo "make run    start a demo server on 127.0.0.1 (data in $(DEMO)/, settings card printed)"
	@echo "make test   install test tools if missing, then ruff, mypy --strict and pytest (TEST_WORKERS=$(TEST_WORKERS))"
	@echo "make lint   ruff and mypy only"
	@echo "make docs   regenerate docs/config.md from the config model"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make clean  remove caches and build output (distclean: also $(VENV), $(DEMO) and .cache, the earlier releases of the upgrade tests)"

venv: $(STAMP)

# Reinstall when the dependencies change; the editable install picks up source edits by itself.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

# The demo data is built in $(DEMO).new and renamed at the end, so an interrupted first run
# never leaves a half-made $(DEMO) behind.
run: venv
	@if [ ! -d $(DEMO) ]; then \
	  set -e; rm -rf $(DEMO).new; \
	  $(MAILSTEAD) init --dev --data-dir $(DEMO).new --hostname mail.demo.test --domain demo.test >/dev/null; \
	  (umask 077; $(PY) -c 'import secrets; print(secrets.token_urlsafe(12))' > $(DEMO).new/demo-password); \
	  $(MAILSTEAD) user add demo@demo.test --password-stdin --data-dir $(DEMO).new < $(DEMO).new/demo-password; \
	  mv $(DEMO).new $(DEMO); \
	fi
	@echo
	@$(MAILSTEAD) card demo@demo.test --data-dir $(DEMO) --password-file $(DEMO)/demo-password
	@echo
	exec $(MAILSTEAD) serve --data-dir $(DEMO)

# swaks, mbsync (isync) and openssl drive the integration tests; install them only when one is
# missing and we may (root, or sudo without a password).
test-deps:
	@if command -v swaks >/dev/null && command -v mbsync >/dev/null && command -v openssl >/dev/null \
	    && command -v fetchmail >/dev/null \
	    && command -v postfix >/dev/null && command -v dovecot >/dev/null \
	    && test -x /usr/lib/dovecot/pop3 && test -x /usr/lib/dovecot/imap \
	    && command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	    && command -v rspamd >/dev/null && command -v clamd >/dev/null \
	    && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    && perl -MIO::Socket::SSL -MAuthen::SASL -e1 2>/dev/null; then \
	  :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(TEST_DEBS); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y $(TEST_DEBS); \
	else \
	  echo "warning: test tools ($(TEST_DEBS)) missing and no root or sudo: the tests that need them will fail or skip" >&2; \
	fi

# The unit, fuzz and contract tests first, on their own: some hold CPU-time budgets (e.g.
# FETCH of 10,000 messages in a second) that parallel servers would eat into. Then the
# integration tests, each once per store backend (SQLite, PostgreSQL), on TEST_WORKERS
# workers; --dist loadscope keeps each module's tests on one worker, in order
# (tests/integration/conftest.py).
test: venv test-deps
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy --strict src
	$(VENV)/bin/pytest -q --ignore=tests/integration
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadscope tests/integration

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy --strict src

docs: venv
	$(PY) -m mailstead.config.docs > docs/config.md.new && mv docs/config.md.new docs/config.md

bench: venv
	@set -e; found=0; for f in bench/*.py; do \
	  [ -e "$$f" ] || continue; found=1; echo "== $$f"; $(PY) "$$f"; \
	done; [ $$found = 1 ] || echo "no benchmarks in bench/ yet"

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis $(DEMO).new
	find src tests bench -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(DEMO) .cache
