"""Benchmarks on the local test bed; each prints one JSON document."""
