# Shortcuts; the scripts in scripts/ are the real thing.
.PHONY: bootstrap run test bench fmt

bootstrap:
	./scripts/bootstrap

run:
	./scripts/run

test:
	./scripts/test

# Benchmark (bench/ may not exist yet).
bench: bootstrap
	@if [ -d bench ]; then .venv/bin/python -m bench; else echo "no bench/ yet"; fi

# Format and auto-fix lint findings.
fmt: bootstrap
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
