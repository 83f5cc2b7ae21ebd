"""Benchmarks that print figures (make bench), not tests: run as `python -m bench.<name>`."""
