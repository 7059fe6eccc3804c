"""Comparing trained runs: which runs, grouped how, judged how, reported how."""
