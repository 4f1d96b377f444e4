"""Benchmarks for `make bench`: each bench_*.py module has a ``main() -> None`` that prints its numbers."""
