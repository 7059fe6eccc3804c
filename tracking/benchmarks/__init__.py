"""Benchmarks that print ratios against a peer measured in the same run.

Each is `python -m tracking.benchmarks.<name>`: tracking_cost, data_loading, precision.
"""
