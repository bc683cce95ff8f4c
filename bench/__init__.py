"""Benchmarks: scripts run by hand, not tests."""
