"""Benchmarks: `python -m bench.NAME` prints figures; `--json` prints one document."""
