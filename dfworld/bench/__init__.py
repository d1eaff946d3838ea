"""Benchmarks and evaluations: metrics from the probes, suites, reports."""
