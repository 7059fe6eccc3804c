"""Reaching the tracking store, a run's life and its vocabulary, the MLflow UI."""
