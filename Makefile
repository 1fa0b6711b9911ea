# Convenience targets; each one is a thin wrapper over a script that sets itself up.
.PHONY: demo test lint chaos bench schemas

demo:           ## set up and run the demo (Ctrl-C stops it)
	./scripts/demo

test:           ## set up and run ruff, mypy --strict and the whole test suite
	./scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

chaos:          ## the long fault-injection runs (kills, outages, failover)
	./scripts/test -m chaos

bench:          ## benchmarks; each prints its figures
	./scripts/bench
