"""Benchmarks: each module prints its figures; run them with ./scripts/bench."""
