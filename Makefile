# Convenience targets; each one is a thin wrapper over a script that sets itself up.
.PHONY: demo test lint chaos bench schemas arm64

demo:           ## set up and run the demo (Ctrl-C stops it)
	./scripts/demo

test:           ## set up and run ruff, mypy --strict and the whole test suite
	./scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/mypy

chaos:          ## the long fault-injection runs against `edgegw run` (docs/chaos.md); CHAOS="--quick sigkill" picks
	./scripts/test -m chaos; rc=$$?; .venv/bin/python -m bench.chaos $(CHAOS) && exit $$rc

bench:          ## benchmarks; each prints its figures
	./scripts/bench

arm64:          ## the Raspberry Pi (64-bit) by emulation: pure suites + short e2e under qemu (as in CI); docs/raspberry-pi.md
	./scripts/arm64 ci
