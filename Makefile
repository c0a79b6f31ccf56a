# The two commands a newcomer runs: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The redactor compiled with mypyc (gateway/compiled.py), rebuilt when a source changes.
# Without a C compiler the gateway runs it as plain Python, as it does any stale build.
COMPILED := gateway/_compiled.json
$(COMPILED): $(STAMP) $(wildcard gateway/*.py gateway/*/*.py)
	$(BIN)/python -c 'from gateway.compiled import build; raise SystemExit(build())' || true

demo: $(STAMP) $(COMPILED)
	$(BIN)/privacy-gateway demo

lint: $(STAMP) $(COMPILED)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy --strict gateway

test: lint
	$(BIN)/pytest

# nginx (the pass-through row's yardstick) from Debian's packages when it is missing and
# this user may install it; without it that row says it was skipped
bench: $(STAMP) $(COMPILED)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	     apt-get install -y -qq --no-install-recommends nginx) >/dev/null 2>&1; } || \
	  echo "bench: nginx not installable; its row is skipped"
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.audit

# a bounded mixed load (default 5 minutes, 64 connections): errors, p50/p99, RSS, open files
soak: $(STAMP) $(COMPILED)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build $(COMPILED)
	find gateway -name '*.so' -delete
