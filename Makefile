# Shortcuts; the scripts in scripts/ are the real thing.
.PHONY: bootstrap run test bench fmt

bootstrap:
	./scripts/bootstrap

run:
	./scripts/run

test:
	./scripts/test

# Benchmark: `make bench` (full, ~6 min) or `make bench QUICK=1` (< 3 min).
# Installs the optional plotting extra (matplotlib) first.
bench: bootstrap
	.venv/bin/pip install -q -c constraints.txt -e '.[bench]'
	QUICK=$(QUICK) .venv/bin/python -m bench

# Format and auto-fix lint findings.
fmt: bootstrap
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
