"""Command-line argument types shared by the suite's entry points.

Values may arrive quoted (`mlflow run -P epochs="'3'"`, MLproject templates): one pair of
quotes around a value is ignored."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def auto_or_number(kind: type, name: str) -> Callable[[str], Any]:
    """argparse type: a number of `kind`, or "auto" (also "" and "none") for None."""
    def parse(text: str) -> Any:
        value = _unquote(text)
        if value.lower() in ("", "auto", "none"):
            return None
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'} or 'auto', "
                f"got {text!r}") from None
    return parse


def number(kind: type, name: str) -> Callable[[str], Any]:
    """argparse type: a number of `kind`, with a message naming `name` when it is not one."""
    def parse(text: str) -> Any:
        try:
            return kind(_unquote(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
    return parse


def _unquote(text: str) -> str:
    return text.strip().strip("'\"")
