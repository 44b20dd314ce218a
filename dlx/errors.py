"""User-facing errors: one clear message, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, ...).

    The CLI prints ``str(err)`` (plus ``err.hint`` when given) and exits with code 2.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class DataError(UserError):
    """A dataset could not be found, read or verified."""


def first_line(err: BaseException) -> str:
    """An exception's first message line (its type name when it has none): the cause, without
    the pages some libraries append."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def suggest(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest candidates, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
