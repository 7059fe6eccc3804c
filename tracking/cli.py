"""What every command of the suite shares: argument types, bad input, signals.

    with bad_input_exits(parser):        # tracking URI checked first; UsageError -> exit 2
        config = ...; data = load_for(config)
    with sigterm_as_interrupt():          # `kill` ends runs like Ctrl-C (KILLED, resumable)
        results = train(config, data)

Values may arrive quoted (`mlflow run -P epochs="'3'"`, MLproject templates): one pair of
quotes around a value is ignored (`unquote`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import mlflow

from tracking.errors import UsageError
from tracking.store.connect import TrackingServerError, check_tracking_uri


class CommandParser(argparse.ArgumentParser):
    """argparse's parser for every command of the suite, whose errors are one line on stderr,
    `prog: error: message (see --help)`, with exit status 2: argparse's own usage block (16
    lines for tracking.train) would bury the line that matters, under `mlflow run` too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def unquote(text: str) -> str:
    """`text` without surrounding blanks and one pair of quotes (as `mlflow run` may pass it)."""
    return text.strip().strip("'\"")


def auto_or_number(kind: type, name: str) -> Callable[[str], Any]:
    """argparse type: a number of `kind`, or "auto" (also "" and "none") for None."""
    def parse(text: str) -> Any:
        value = unquote(text)
        if value.lower() in ("", "auto", "none"):
            return None
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an integer' if kind is int else 'a number'} or 'auto', "
                f"got {text!r}") from None
    return parse


def number(kind: type, name: str, positive: bool = False) -> Callable[[str], Any]:
    """argparse type: a number of `kind` (with `positive`, finite and above 0), with a message
    naming `name` when it is not one."""
    def parse(text: str) -> Any:
        try:
            value = kind(unquote(text))
        except ValueError:
            value = None
        if value is None or (positive and not 0 < value < float("inf")):
            article = "a positive" if positive else "an" if kind is int else "a"
            raise argparse.ArgumentTypeError(
                f"{name} must be {article} {'integer' if kind is int else 'number'}, "
                f"got {text!r}")
        return value
    return parse


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def output_folder(text: str) -> str:
    """argparse type of an --output folder: made now (with its parents) so that a path that
    cannot be one (a file, a read-only place) is refused before any run starts."""
    path = Path(unquote(text))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise argparse.ArgumentTypeError(
            f"not a folder that can be written: {str(path)!r} ({err.strerror})") from None
    return str(path)


def boolean(name: str, auto: bool = False) -> Callable[[str], bool | None]:
    """argparse type: true/false (yes/no, on/off, 1/0); with `auto`, also "auto" ("", "none")
    for None. Without `auto`, an empty value is false."""
    def parse(text: str) -> bool | None:
        value = unquote(text).lower()
        if value in TRUE_WORDS:
            return True
        if value in FALSE_WORDS:
            return False
        if auto and value in ("", "auto", "none"):
            return None
        if not auto and value == "":
            return False
        allowed = "true, false or auto" if auto else "true or false"
        raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {text!r}")
    return parse


_RECEIVED: list[int] = []  # the interrupting signals received inside sigterm_as_interrupt


def _interrupt_message(signum: int) -> str:
    return "interrupted (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"


def _raise_interrupt(signum: int, frame: Any) -> NoReturn:
    _RECEIVED.append(signum)
    raise KeyboardInterrupt(_interrupt_message(signum))


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt of a signal received earlier whose exception Python
    swallowed: one raised inside a garbage-collector callback or a finalizer (`gc.collect()`
    after a tuning trial, say) is only printed as "Exception ignored", and the loop would go
    on. Call between units of work (trials)."""
    if _RECEIVED:
        raise KeyboardInterrupt(_interrupt_message(_RECEIVED[-1]))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler's preemption) raises KeyboardInterrupt, as Ctrl-C does, so
    the run in progress ends KILLED with its checkpoints instead of staying RUNNING; both are
    remembered for `raise_if_interrupted`."""
    _RECEIVED.clear()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def interrupt_status(stop: KeyboardInterrupt) -> int:
    """Exit status of a command stopped by `stop`: 143 for SIGTERM, 130 for Ctrl-C (the
    shell's 128 + signal number)."""
    return 143 if "SIGTERM" in str(stop) else 130


@contextlib.contextmanager
def bad_input_exits(parser: argparse.ArgumentParser, check_tracking: bool = True
                    ) -> Iterator[None]:
    """Check the tracking URI (fail fast, naming it), then run the block; a UsageError raised
    in it ends the command with `parser.error` (its one-line message, exit status 2). Under
    `mlflow run`, which has created its run before this command starts, the message also goes
    to that run as tag `stop_reason` (MLflow then marks it FAILED)."""
    try:
        if check_tracking:
            check_tracking_uri()
        yield
    except UsageError as err:
        launched = os.environ.get("MLFLOW_RUN_ID")
        if launched and not isinstance(err, TrackingServerError):
            with contextlib.suppress(Exception):  # the message matters more than the tag
                mlflow.MlflowClient().set_tag(launched, "stop_reason", f"bad input: {err}"[:5000])
        parser.error(str(err))
