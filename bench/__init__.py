"""Benchmarks: each prints a table and writes JSON to bench/results/ (speed targets live here, not in tests)."""
