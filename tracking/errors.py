"""The one kind of error a command turns into exit status 2: bad input."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input: a setting, a file, a server address. The message is one line that names it
    and says what is allowed; commands exit with status 2 before any run exists
    (`tracking.cli.bad_input_exits`). Each part of the suite raises its own subclass."""
