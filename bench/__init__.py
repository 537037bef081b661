"""The benchmark harness (`make bench`, `make bench-smoke`); see docs/BENCHMARKS.md.

Nothing here is imported by the site: the bench runs the project under `bench.settings`, which
adds a trivial baseline view and the `bench_fill_ledger` command, against its own database.
"""
